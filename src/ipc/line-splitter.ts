// Cuts a byte stream into '\n'-terminated lines with a hard maximum length.
//
//   chunk ──► [ pending parts … ] ──'\n'──► line (UTF-8 decoded, '\r' and '\n' stripped)
//                     │
//                     └── pending bytes > line_bytes_max ──► overflow (the caller
//                         answers once and closes: it cannot resynchronise on a
//                         line it will never see the end of)
//
// Pending parts are kept as the Buffers the socket delivered, joined once
// when the line ends, so a line that arrives in many small chunks costs
// one copy, and a line over the limit is dropped before it is ever joined.

export type SplitResult = 'ok' | 'overflow';

export class LineSplitter {
  private parts: Buffer[] = [];
  private pending_bytes = 0;
  private overflowed = false;

  constructor(private readonly line_bytes_max: number, private readonly onLine: (line: string) => void) {}

  /** Bytes received of a line not yet terminated. */
  get partial_bytes(): number {
    return this.pending_bytes;
  }

  push(chunk: Buffer): SplitResult {
    if (this.overflowed) return 'overflow';
    let start = 0;
    for (;;) {
      const newline = chunk.indexOf(0x0a, start);
      if (newline === -1) break;
      const piece_bytes = newline - start;
      if (this.pending_bytes + piece_bytes > this.line_bytes_max) return this.overflow();
      let line: Buffer;
      if (this.parts.length === 0) {
        line = chunk.subarray(start, newline);
      } else {
        this.parts.push(chunk.subarray(start, newline));
        line = Buffer.concat(this.parts, this.pending_bytes + piece_bytes);
        this.parts = [];
      }
      this.pending_bytes = 0;
      start = newline + 1;
      let end = line.length;
      if (end > 0 && line[end - 1] === 0x0d) end -= 1;
      if (end > 0) this.onLine(line.toString('utf8', 0, end));
      // The handler may have closed the connection and reset us.
      if (this.overflowed) return 'overflow';
    }
    const rest_bytes = chunk.length - start;
    if (rest_bytes > 0) {
      if (this.pending_bytes + rest_bytes > this.line_bytes_max) return this.overflow();
      // A view, not a copy: a net.Socket hands each chunk over for good.
      this.parts.push(start === 0 ? chunk : chunk.subarray(start));
      this.pending_bytes += rest_bytes;
    }
    return 'ok';
  }

  /** At end of stream: a last line without its '\n' still counts. */
  flush(): void {
    if (this.overflowed || this.pending_bytes === 0) return;
    this.push(Buffer.from([0x0a]));
  }

  private overflow(): SplitResult {
    this.overflowed = true;
    this.parts = [];
    this.pending_bytes = 0;
    return 'overflow';
  }
}
