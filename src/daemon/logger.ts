// The daemon's logger: pino, structured, one line per event that matters
// (docs/design.md §6), never per I/O.
//
// On a terminal the JSON lines pass through a small formatter (pino-pretty
// is not a dependency) that prints
//
//   14:02:07.311 INFO  snapshot taken  id=5f0c… volumes=demo took_ms=3
//
// Anywhere else (a file, journald, a pipe) the lines stay JSON, written
// synchronously so nothing is lost when the daemon exits.

import pino, { type DestinationStream, type Logger } from 'pino';
import type { LogLevel } from './config';

const LEVEL_NAMES: Readonly<Record<number, string>> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
const LEVEL_COLORS: Readonly<Record<number, string>> = { 10: '90', 20: '36', 30: '32', 40: '33', 50: '31', 60: '35' };
/** Keys pino adds to every line, shown in the prefix or not at all. */
const HIDDEN_KEYS = new Set(['level', 'time', 'msg', 'pid', 'hostname']);
/** A field value longer than this is cut: a log line is read by a human. */
const FIELD_CHARS_MAX = 200;

function formatValue(value: unknown): string {
  const text = typeof value === 'string' ? (/[\s"=]/.test(value) ? JSON.stringify(value) : value) : JSON.stringify(value);
  return text.length > FIELD_CHARS_MAX ? `${text.slice(0, FIELD_CHARS_MAX)}…` : text;
}

function twoDigits(value: number): string {
  return String(value).padStart(2, '0');
}

/** Turns one pino JSON line into one human line (plus a stack, if any). */
export function formatLogLine(line: string, color: boolean): string {
  let record: Record<string, unknown>;
  try {
    record = JSON.parse(line) as Record<string, unknown>;
  } catch {
    // Not ours (pino always writes JSON): show it as it came.
    return line.endsWith('\n') ? line : `${line}\n`;
  }
  const time = new Date(typeof record.time === 'number' ? record.time : Date.now());
  const stamp = `${twoDigits(time.getHours())}:${twoDigits(time.getMinutes())}:${twoDigits(time.getSeconds())}.${String(time.getMilliseconds()).padStart(3, '0')}`;
  const level = typeof record.level === 'number' ? record.level : 30;
  const name = (LEVEL_NAMES[level] ?? String(level)).padEnd(5);
  const label = color ? `\u001b[${LEVEL_COLORS[level] ?? '0'}m${name}\u001b[0m` : name;
  const fields: string[] = [];
  let stack = '';
  for (const [key, value] of Object.entries(record)) {
    if (HIDDEN_KEYS.has(key) || value === undefined) continue;
    if (key === 'err' && typeof value === 'object' && value !== null) {
      const err = value as { message?: unknown; stack?: unknown; code?: unknown };
      fields.push(`err=${formatValue(err.message ?? 'error')}`);
      if (err.code !== undefined) fields.push(`code=${formatValue(err.code)}`);
      if (typeof err.stack === 'string') stack = `\n    ${err.stack.split('\n').slice(1).join('\n    ').trim()}`;
      continue;
    }
    fields.push(`${key}=${formatValue(value)}`);
  }
  const message = typeof record.msg === 'string' ? record.msg : '';
  return `${stamp} ${label} ${message}${fields.length > 0 ? `  ${fields.join(' ')}` : ''}${stack}\n`;
}

/** A pino destination that formats each line for a terminal. */
export class PrettyDestination implements DestinationStream {
  constructor(private readonly output: NodeJS.WritableStream, private readonly color: boolean) {}

  write(line: string): void {
    this.output.write(formatLogLine(line, this.color));
  }
}

export interface LoggerOptions {
  level: LogLevel;
  /** Default: stdout. */
  output?: NodeJS.WriteStream;
  /** Force the human format (true) or JSON (false); default: human on a TTY. */
  pretty?: boolean;
}

export function createLogger(options: LoggerOptions): Logger {
  const output = options.output ?? process.stdout;
  const pretty = options.pretty ?? output.isTTY === true;
  const color = pretty && output.isTTY === true && !process.env.NO_COLOR;
  const destination: DestinationStream = pretty
    ? new PrettyDestination(output, color)
    : pino.destination({ dest: (output as { fd?: number }).fd ?? 1, sync: true });
  return pino({ level: options.level, base: { pid: process.pid }, name: undefined }, destination);
}
