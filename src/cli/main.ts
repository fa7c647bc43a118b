// `ublksnap COMMAND [options]`: the command-line client of the daemon, and
// `ublksnap daemon` to run the daemon itself.
//
// Contract (docs/design.md §6): upstream blksnap console-tool command names and
// options; key=value output, or one JSON object with -j; exit status 0 on
// success, otherwise non-zero with exactly one line on stderr:
//
//   ublksnap: snapshot_take: unknown snapshot 5f0c… (ESRCH)
//
// The socket: --socket PATH, else $UBLKSNAP_SOCKET, else the default path
// that the daemon uses too (daemon/paths.ts).

import { UblksnapError, fromSystemError } from '../shared/errors';
import { clientSocketPath, defaultSocketPath, packageVersion } from '../daemon/paths';
import { COMMON_OPTIONS, formatOptions, parseCommandArgs } from './args';
import { COMMANDS, type Command } from './commands';

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

function overallUsage(): string {
  const width = Math.max(...COMMANDS.map((command) => command.name.length), 'daemon'.length);
  const rows = COMMANDS.map((command) => `  ${command.name.padEnd(width)}  ${command.summary}`);
  return `Usage: ublksnap COMMAND [options]
       ublksnap COMMAND --help
       ublksnap daemon [options]       (run the daemon; see 'ublksnap daemon --help')

Copy-on-write snapshots and change-block tracking of block devices and
files, in user space. The commands follow the upstream blksnap tool.

Commands:
${rows.join('\n')}
  ${'daemon'.padEnd(width)}  Run the daemon in the foreground.

Options of every command:
${formatOptions(COMMON_OPTIONS)}

Sizes take K, M, G, T suffixes (powers of 1024). -d takes a volume name, or
any path naming the volume's file or device (anything with a '/': a symlink,
/dev/block/MAJ:MIN, its ublk device, a loop device of its file). Long options
abbreviate to any unambiguous prefix (--dev for --device).
Socket: --socket, else $UBLKSNAP_SOCKET, else ${defaultSocketPath()}
`;
}

function commandUsage(command: Command): string {
  return `Usage: ublksnap ${command.name}${command.usage ? ` ${command.usage}` : ''} [-j] [--socket PATH]

${command.summary}

Options:
${formatOptions([...command.options, ...COMMON_OPTIONS])}

${command.details}
`;
}

function errorLine(command: string | null, error: unknown): string {
  const where = command ? `ublksnap: ${command}: ` : 'ublksnap: ';
  // A system error that escaped a command (EPIPE, EACCES…) still gets its errno name.
  const known = error instanceof UblksnapError ? error
    : typeof (error as NodeJS.ErrnoException)?.code === 'string' ? fromSystemError(error, 'system error') : null;
  if (known) return `${where}${known.message.split('\n')[0]} (${known.code})`;
  return `${where}${error instanceof Error ? error.message.split('\n')[0] : String(error)}`;
}

/** Runs the CLI with argv (without node and the script); resolves to the exit status. */
export async function main(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  // Common options may also come before the command: `ublksnap --socket S -j status`.
  const leading: string[] = [];
  let index = 0;
  while (index < argv.length) {
    const arg = argv[index] as string;
    if (arg === '-j' || arg === '--json' || arg.startsWith('--socket=')) {
      leading.push(arg);
      index += 1;
    } else if (arg === '--socket' && index + 1 < argv.length) {
      leading.push(arg, argv[index + 1] as string);
      index += 2;
    } else {
      break;
    }
  }
  const name = argv[index];
  const rest = [...leading, ...argv.slice(index + 1)];
  if (name === undefined) {
    process.stderr.write(overallUsage());
    return EXIT_USAGE;
  }
  if (name === 'help' || name === '--help' || name === '-h') {
    process.stdout.write(overallUsage());
    return EXIT_OK;
  }
  if (name === '--version' || name === '-V') {
    process.stdout.write(`ublksnap ${packageVersion()}\n`);
    return EXIT_OK;
  }
  if (name === 'daemon') {
    // Loaded only here: the client commands need neither pino nor the engine.
    // It exits itself: engine workers would otherwise keep the process alive.
    const { daemonCommand } = require('../daemon/main') as typeof import('../daemon/main');
    process.exit(await daemonCommand(argv.slice(index + 1)));
  }
  const command = COMMANDS.find((candidate) => candidate.name === name);
  if (!command) {
    // Exit 1, not 2: upstream's tool fails an unknown command like any other error.
    process.stderr.write(`${errorLine(null, new UblksnapError('EINVAL', `unknown command ${JSON.stringify(name)} (see 'ublksnap --help')`))}\n`);
    return EXIT_FAILURE;
  }
  try {
    const values = parseCommandArgs(rest, command.options);
    if (values.help === true) {
      process.stdout.write(commandUsage(command));
      return EXIT_OK;
    }
    await command.run({
      command: command.name,
      values,
      json: values.json === true,
      socket_path: clientSocketPath(typeof values.socket === 'string' ? values.socket : undefined, env),
      stdout: process.stdout,
      stderr: process.stderr,
    });
    return EXIT_OK;
  } catch (error) {
    process.stderr.write(`${errorLine(command.name, error)}\n`);
    return EXIT_FAILURE;
  }
}

/** The entry of bin/ublksnap.js. */
export function run(): void {
  // `ublksnap status | head -1`: the reader left; that is not an error of ours.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(EXIT_OK);
    throw error;
  });
  void main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}

if (require.main === module) run();
