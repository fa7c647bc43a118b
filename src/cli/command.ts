// The shape of one CLI command: its name, options, help and the function
// that runs it with the parsed values. commands.ts and backup-commands.ts
// hold the tables; main.ts parses argv against them.

import type { OptionSpec, ParsedValues } from './args';

export interface CommandContext {
  readonly command: string;
  readonly values: ParsedValues;
  readonly json: boolean;
  readonly socket_path: string;
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream & { isTTY?: boolean };
}

export interface Command {
  readonly name: string;
  readonly summary: string;
  /** The options part of the usage line. */
  readonly usage: string;
  readonly options: readonly OptionSpec[];
  /** Printed after the options in --help: output keys, examples. */
  readonly details: string;
  run(context: CommandContext): Promise<void>;
}
