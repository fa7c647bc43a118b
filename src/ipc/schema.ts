// A small schema language for the parameters of IPC methods: the boundary
// check of docs/style.md habit 9. Every method declares its params as a schema; the
// server validates each request against it before any handler runs, and
// the TypeScript type of the validated params is inferred from the same
// schema, so the declaration, the check and the handler cannot drift apart.
//
// Design notes
// - Every string has a maximum length, every array a maximum item count and
//   every integer a range: nothing from a client is unbounded.
// - Objects are closed: an unknown key is an error (a misspelt option must
//   not be silently ignored).
// - Validation never recurses deeper than the schema, so a deeply nested
//   value from a client costs one type check, not a stack.
// - Errors name the path of the offending value (`params.ranges[3].count`)
//   and what was expected, built from the schema's own limits.

import { UblksnapError } from '../shared/errors';

export interface StringSchema {
  readonly kind: 'string';
  readonly max_length: number;
  readonly min_length: number;
  readonly pattern?: RegExp;
  /** What the pattern means, for the error message ("a snapshot id (UUID)"). */
  readonly pattern_name?: string;
  readonly one_of?: readonly string[];
  readonly optional?: boolean;
}

export interface IntegerSchema {
  readonly kind: 'integer';
  readonly min: number;
  readonly max: number;
  readonly optional?: boolean;
}

export interface BooleanSchema {
  readonly kind: 'boolean';
  readonly optional?: boolean;
}

export interface ArraySchema<I extends Schema = Schema> {
  readonly kind: 'array';
  readonly items: I;
  readonly min_items: number;
  readonly max_items: number;
  readonly optional?: boolean;
}

export interface ObjectSchema<F extends Record<string, Schema> = Record<string, Schema>> {
  readonly kind: 'object';
  readonly fields: F;
  readonly optional?: boolean;
}

export type Schema = StringSchema | IntegerSchema | BooleanSchema | ArraySchema<any> | ObjectSchema<any>;

type OptionalKeys<F> = { [K in keyof F]: F[K] extends { optional: true } ? K : never }[keyof F];
type RequiredKeys<F> = Exclude<keyof F, OptionalKeys<F>>;

/** The TypeScript type of a value that passed validation against S. */
export type Infer<S> =
  S extends StringSchema ? string :
    S extends IntegerSchema ? number :
      S extends BooleanSchema ? boolean :
        S extends ArraySchema<infer I> ? Infer<I>[] :
          S extends ObjectSchema<infer F> ?
            { [K in RequiredKeys<F>]: Infer<F[K]> } & { [K in OptionalKeys<F>]?: Infer<F[K]> } :
            never;

// Builders: schemas are written with these so the literal types survive.

export function string(max_length: number, options: Partial<Omit<StringSchema, 'kind' | 'max_length'>> = {}): StringSchema {
  return { kind: 'string', max_length, min_length: options.min_length ?? 1, ...options };
}

export function oneOf<T extends string>(values: readonly T[]): StringSchema {
  const max_length = Math.max(...values.map((value) => value.length));
  return { kind: 'string', max_length, min_length: 0, one_of: values };
}

export function integer(min: number, max: number): IntegerSchema {
  return { kind: 'integer', min, max };
}

export function boolean(): BooleanSchema {
  return { kind: 'boolean' };
}

export function array<I extends Schema>(items: I, max_items: number, min_items = 0): ArraySchema<I> {
  return { kind: 'array', items, min_items, max_items };
}

export function object<F extends Record<string, Schema>>(fields: F): ObjectSchema<F> {
  return { kind: 'object', fields };
}

export function optional<S extends Schema>(schema: S): S & { readonly optional: true } {
  return { ...schema, optional: true };
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'string') return `a string of ${value.length} characters`;
  if (typeof value === 'number') return Number.isInteger(value) ? `the integer ${value}` : `the number ${value}`;
  return `a ${typeof value}`;
}

function fail(path: string, message: string): never {
  throw new UblksnapError('EINVAL', `${path}: ${message}`);
}

/**
 * Checks value against schema and returns it typed. Throws UblksnapError
 * EINVAL naming the first offending path.
 */
export function validate<S extends Schema>(schema: S, value: unknown, path: string): Infer<S> {
  switch (schema.kind) {
    case 'string': {
      if (typeof value !== 'string') fail(path, `expected a string, got ${describe(value)}`);
      if (schema.one_of) {
        if (!schema.one_of.includes(value)) fail(path, `expected one of ${schema.one_of.join(', ')}, got ${JSON.stringify(value.slice(0, 64))}`);
        return value as Infer<S>;
      }
      if (value.length < schema.min_length) fail(path, schema.min_length === 1 ? 'must not be empty' : `must hold at least ${schema.min_length} characters`);
      if (value.length > schema.max_length) fail(path, `must hold at most ${schema.max_length} characters, got ${value.length}`);
      if (value.includes('\0')) fail(path, 'must not contain a NUL character');
      if (schema.pattern && !schema.pattern.test(value)) {
        fail(path, `expected ${schema.pattern_name ?? `a match of ${schema.pattern}`}, got ${JSON.stringify(value.slice(0, 64))}`);
      }
      return value as Infer<S>;
    }
    case 'integer': {
      if (typeof value !== 'number' || !Number.isSafeInteger(value)) fail(path, `expected an integer, got ${describe(value)}`);
      if (value < schema.min || value > schema.max) fail(path, `must be in [${schema.min}, ${schema.max}], got ${value}`);
      return value as Infer<S>;
    }
    case 'boolean': {
      if (typeof value !== 'boolean') fail(path, `expected true or false, got ${describe(value)}`);
      return value as Infer<S>;
    }
    case 'array': {
      if (!Array.isArray(value)) fail(path, `expected an array, got ${describe(value)}`);
      if (value.length < schema.min_items) fail(path, `must hold at least ${schema.min_items} item(s)`);
      if (value.length > schema.max_items) fail(path, `must hold at most ${schema.max_items} items, got ${value.length}`);
      return value.map((item, index) => validate(schema.items, item, `${path}[${index}]`)) as Infer<S>;
    }
    case 'object': {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(path, `expected an object, got ${describe(value)}`);
      const input = value as Record<string, unknown>;
      const fields = schema.fields as Record<string, Schema>;
      for (const key of Object.keys(input)) {
        if (!Object.hasOwn(fields, key)) {
          const known = Object.keys(fields);
          fail(path, `unknown key ${JSON.stringify(key.slice(0, 64))} (${known.length > 0 ? `known: ${known.join(', ')}` : 'no keys expected'})`);
        }
      }
      const output: Record<string, unknown> = {};
      for (const [key, field] of Object.entries(fields)) {
        const item = input[key];
        if (item === undefined) {
          if (!field.optional) fail(`${path}.${key}`, 'is required');
          continue;
        }
        output[key] = validate(field, item, `${path}.${key}`);
      }
      return output as Infer<S>;
    }
  }
}
