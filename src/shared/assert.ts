// Assertions for invariants of the core. A failed assertion is a bug: it
// throws an AssertionError that crashes the actor loudly (see docs/style.md habit 8,
// "three kinds of error"). Boundaries validate and answer with errors from
// errors.ts instead; they never rely on these.

export class AssertionError extends Error {
  override name = 'AssertionError';
}

export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new AssertionError(message);
}

export function assertIndex(index: number, count: number, what: string): void {
  if (!(Number.isInteger(index) && index >= 0 && index < count)) {
    throw new AssertionError(`${what} index ${index} outside [0, ${count})`);
  }
}
