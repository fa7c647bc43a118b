// How the CLI prints results: key=value lines as upstream's blksnap tool
// does, or with -j one JSON object holding the same keys. Long-running
// commands show progress on stderr, and only when stderr is a terminal, so
// scripts and pipes see exactly the documented output.

export type Scalar = string | number | boolean | null | undefined;
export type Row = Record<string, Scalar | readonly Scalar[]>;

export function formatValue(value: Scalar | readonly Scalar[]): string {
  if (value === null || value === undefined) return '';
  if (Array.isArray(value)) return value.map((item) => formatValue(item)).join(',');
  return String(value);
}

/** `key=value` lines, in the row's key order. */
export function keyValueLines(row: Row): string {
  return Object.entries(row).map(([key, value]) => `${key}=${formatValue(value as Scalar)}\n`).join('');
}

/** `key=value key=value` on one line (status records, watcher events); values with spaces quoted. */
export function keyValueInline(row: Row): string {
  return Object.entries(row).map(([key, value]) => {
    const text = formatValue(value as Scalar);
    return `${key}=${/[\s"]/.test(text) ? JSON.stringify(text) : text}`;
  }).join(' ');
}

/** Upstream's `version` prints MAJOR.MINOR.REVISION.BUILD; a semver 0.1.0 (or 0.1.0-rc1) is build 0. */
export const UPSTREAM_VERSION_PARTS = 4;

export function upstreamVersion(semver: string): string {
  const parts = (/^(\d+)(?:\.(\d+))?(?:\.(\d+))?/.exec(semver) ?? []).slice(1).map((part) => part ?? '0');
  while (parts.length < UPSTREAM_VERSION_PARTS) parts.push('0');
  return parts.slice(0, UPSTREAM_VERSION_PARTS).join('.');
}

export function jsonLine(value: unknown): string {
  return `${JSON.stringify(value)}\n`;
}

/** Bytes as a human reads them: 1.5 GiB, 640 KiB, 17 B. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** Redraws at most this often: a terminal does not need more. */
const PROGRESS_INTERVAL_MS = 100;

/** One self-overwriting line on stderr while a long operation runs. */
export class Progress {
  private last_draw_ms = 0;
  private drawn = false;

  constructor(
    private readonly label: string,
    private readonly total_bytes: number,
    private readonly stream: NodeJS.WritableStream,
    private readonly enabled: boolean,
  ) {}

  update(done_bytes: number): void {
    if (!this.enabled) return;
    const now_ms = Date.now();
    if (now_ms - this.last_draw_ms < PROGRESS_INTERVAL_MS && done_bytes < this.total_bytes) return;
    this.last_draw_ms = now_ms;
    const percent = this.total_bytes > 0 ? Math.floor((100 * done_bytes) / this.total_bytes) : 100;
    this.stream.write(`\r${this.label}: ${String(percent).padStart(3)}% (${formatBytes(done_bytes)} of ${formatBytes(this.total_bytes)})\u001b[K`);
    this.drawn = true;
  }

  /** Erases the line, leaving the terminal as it was. */
  finish(): void {
    if (this.drawn) this.stream.write('\r\u001b[K');
    this.drawn = false;
  }
}

/** A rate is shown once this much time has passed: before, it is noise. */
const RATE_WARMUP_MS = 500;

function formatDuration(seconds: number): string {
  const whole = Math.max(0, Math.round(seconds));
  const minutes = Math.floor(whole / 60);
  const hours = Math.floor(minutes / 60);
  const pad = (value: number): string => String(value).padStart(2, '0');
  return hours > 0 ? `${hours}:${pad(minutes % 60)}:${pad(whole % 60)}` : `${minutes}:${pad(whole % 60)}`;
}

/** Progress of a copy: percent, bytes, rate and ETA on one self-overwriting stderr line (terminals only). */
export class TransferProgress {
  private readonly started_ms = Date.now();
  private last_draw_ms = 0;
  private drawn = false;

  constructor(private readonly label: string, private readonly stream: NodeJS.WritableStream, private readonly enabled: boolean) {}

  update(done_bytes: number, total_bytes: number): void {
    if (!this.enabled) return;
    const now_ms = Date.now();
    if (now_ms - this.last_draw_ms < PROGRESS_INTERVAL_MS && done_bytes < total_bytes) return;
    this.last_draw_ms = now_ms;
    const elapsed_ms = now_ms - this.started_ms;
    const percent = total_bytes > 0 ? Math.floor((100 * done_bytes) / total_bytes) : 100;
    let tail = '';
    if (elapsed_ms >= RATE_WARMUP_MS && done_bytes > 0) {
      const rate = (done_bytes * 1000) / elapsed_ms;
      tail = `, ${formatBytes(Math.round(rate))}/s, ETA ${formatDuration((total_bytes - done_bytes) / rate)}`;
    }
    this.stream.write(`\r${this.label}: ${String(percent).padStart(3)}% (${formatBytes(done_bytes)} of ${formatBytes(total_bytes)}${tail})\u001b[K`);
    this.drawn = true;
  }

  finish(): void {
    if (this.drawn) this.stream.write('\r\u001b[K');
    this.drawn = false;
  }
}
