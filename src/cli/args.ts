// Option parsing for one CLI command, on node:util parseArgs, plus the one
// habit of upstream's boost::program_options that scripts rely on:
// multitoken options. `-d /dev/a /dev/b` and `-r 0:8 64:8` give two values,
// exactly as `-d /dev/a -d /dev/b` does.
//
// Long options may be abbreviated to any unambiguous prefix, as boost
// allows (`--dev` for `--device`).
//
// Every command also takes the common options: -j/--json, -h/--help,
// --socket PATH.

import { parseArgs } from 'node:util';
import { UblksnapError } from '../shared/errors';

export interface OptionSpec {
  /** Long name, as typed after '--'. */
  name: string;
  short?: string;
  type: 'string' | 'boolean';
  /** Repeatable, and (multitoken) followed by more values without repeating the flag. */
  multiple?: boolean;
  multitoken?: boolean;
  /** Shown in help: `-d PATH`. */
  value_name?: string;
  help: string;
}

export const COMMON_OPTIONS: readonly OptionSpec[] = [
  { name: 'json', short: 'j', type: 'boolean', help: 'print one JSON object with the same keys' },
  { name: 'socket', type: 'string', value_name: 'PATH', help: 'the daemon socket (else $UBLKSNAP_SOCKET, else the default)' },
  { name: 'help', short: 'h', type: 'boolean', help: 'print this help' },
];

export type ParsedValues = Record<string, string | boolean | string[] | undefined>;

function invalid(message: string): never {
  throw new UblksnapError('EINVAL', message);
}

/**
 * `--dev` for `--device`: boost::program_options, which upstream's tool
 * uses, takes any unambiguous prefix of a long option, and scripts written
 * for it do too. An exact name always wins; a prefix of two names is
 * refused with both.
 */
export function expandLongOption(arg: string, all: readonly OptionSpec[]): string {
  if (!arg.startsWith('--') || arg === '--') return arg;
  const equals = arg.indexOf('=');
  const typed = arg.slice(2, equals === -1 ? undefined : equals);
  if (typed.length === 0 || all.some((spec) => spec.name === typed)) return arg;
  const matches = all.filter((spec) => spec.name.startsWith(typed));
  if (matches.length === 0) invalid(`unknown option --${typed}`);
  if (matches.length > 1) invalid(`option --${typed} is ambiguous: it could be ${matches.map((spec) => `--${spec.name}`).join(' or ')}`);
  return `--${(matches[0] as OptionSpec).name}${equals === -1 ? '' : arg.slice(equals)}`;
}

/** A value that looks like a negative number (`-l -5`): taken as the value, for its parser to refuse by name. */
const NEGATIVE_NUMBER = /^-\d/;

/**
 * Rewrites argv before parseArgs: long-option prefixes expanded, and a
 * string option followed by a negative number joined to it (`--limit=-5`),
 * so the value's own check says what is wrong with it instead of
 * parseArgs's "argument is ambiguous".
 */
function normalizeArgv(argv: string[], all: readonly OptionSpec[]): string[] {
  const out: string[] = [];
  for (let index = 0; index < argv.length; index += 1) {
    const arg = argv[index] as string;
    if (arg === '--') {
      out.push(...argv.slice(index));
      break;
    }
    const expanded = expandLongOption(arg, all);
    const next = argv[index + 1];
    const spec = expanded.startsWith('--')
      ? all.find((candidate) => `--${candidate.name}` === expanded)
      : all.find((candidate) => candidate.short !== undefined && `-${candidate.short}` === expanded);
    if (spec?.type === 'string' && next !== undefined && NEGATIVE_NUMBER.test(next)) {
      out.push(`--${spec.name}=${next}`);
      index += 1;
      continue;
    }
    out.push(expanded);
  }
  return out;
}

/** Parses argv (after the command name) against the command's options and the common ones. */
export function parseCommandArgs(input_argv: string[], specs: readonly OptionSpec[]): ParsedValues {
  const all = [...specs, ...COMMON_OPTIONS];
  const argv = normalizeArgv(input_argv, all);
  const options: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }> = {};
  for (const spec of all) {
    options[spec.name] = { type: spec.type, ...(spec.short ? { short: spec.short } : {}), ...(spec.multiple ? { multiple: true } : {}) };
  }
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, strict: true, allowPositionals: true, tokens: true });
  } catch (error) {
    // ERR_PARSE_ARGS_UNKNOWN_OPTION, …_INVALID_OPTION_VALUE: the message names the option.
    // Its first line says it all; the error contract is one line on stderr.
    invalid(((error as Error).message.split('\n')[0] ?? '').trim());
  }
  const values = parsed.values as ParsedValues;
  // Multitoken values are rebuilt in command-line order: positionals continue
  // the multitoken option just before them; any other positional is stray.
  const rebuilt = new Map<string, string[]>();
  let continuing: OptionSpec | null = null;
  for (const token of parsed.tokens ?? []) {
    if (token.kind === 'option') {
      const spec = all.find((candidate) => candidate.name === token.name);
      continuing = spec?.multitoken ? spec : null;
      if (continuing && token.value !== undefined) {
        const list = rebuilt.get(continuing.name) ?? [];
        list.push(token.value);
        rebuilt.set(continuing.name, list);
      }
      continue;
    }
    if (token.kind === 'option-terminator') {
      continuing = null;
      continue;
    }
    if (!continuing) invalid(`unexpected argument ${JSON.stringify(token.value)}`);
    (rebuilt.get(continuing.name) as string[]).push(token.value);
  }
  for (const [name, list] of rebuilt) values[name] = list;
  return values;
}

/** One line per option, aligned, for --help. */
export function formatOptions(specs: readonly OptionSpec[]): string {
  const rows = specs.map((spec) => {
    const flag = `${spec.short ? `-${spec.short}, ` : '    '}--${spec.name}${spec.value_name ? ` ${spec.value_name}` : ''}${spec.multitoken ? ' …' : ''}`;
    return [flag, spec.help] as const;
  });
  const width = Math.max(...rows.map(([flag]) => flag.length));
  return rows.map(([flag, help]) => `  ${flag.padEnd(width)}  ${help}`).join('\n');
}
