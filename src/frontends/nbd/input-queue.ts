// The bytes a connection received and has not consumed yet: the socket's
// chunks in arrival order, consumed by copying into a destination (a
// header buffer, a slab slot) or by dropping. Chunks are referenced, never
// copied in between; the only copy is into the destination.

export class InputQueue {
  private readonly chunks: Buffer[] = [];
  private position = 0;

  get empty(): boolean {
    return this.chunks.length === 0;
  }

  /** Appends chunk[start..]. */
  push(chunk: Buffer, start: number): void {
    if (start >= chunk.length) return;
    if (this.chunks.length === 0) this.position = start;
    else if (start > 0) chunk = chunk.subarray(start);
    this.chunks.push(chunk);
  }

  /**
   * Copies the chunks still held into memory of their own: the caller is
   * about to reuse the buffer it received them in.
   */
  detach(): void {
    for (let i = 0; i < this.chunks.length; i += 1) this.chunks[i] = Buffer.from(this.chunks[i]!);
  }

  clear(): void {
    this.chunks.length = 0;
    this.position = 0;
  }

  /** Copies up to want bytes to target at target_position (drops them when target is null); returns how many. */
  take(target: Buffer | null, target_position: number, want: number): number {
    let taken = 0;
    while (taken < want && this.chunks.length > 0) {
      const chunk = this.chunks[0]!;
      const count = Math.min(chunk.length - this.position, want - taken);
      if (target !== null) chunk.copy(target, target_position + taken, this.position, this.position + count);
      taken += count;
      this.position += count;
      if (this.position === chunk.length) {
        this.chunks.shift();
        this.position = 0;
      }
    }
    return taken;
  }
}
