// `ublksnap daemon [options]`: parse the options, start the daemon, run until
// a signal, stop cleanly, exit.
//
//   SIGHUP   reload: TLS certificates and keys are read again; nothing stops
//
//   exit 0   stopped on SIGTERM / SIGINT or `ublksnap shutdown`,
//            every shutdown step clean
//   exit 1   could not start (the reason is one line on stderr), or a
//            shutdown step failed, or a second signal forced the exit
//   exit 2   bad options or config (one line on stderr)
//   exit 70  a bug: an uncaught exception (logged as fatal)

import type { Logger } from 'pino';
import { UblksnapError } from '../shared/errors';
import { DAEMON_USAGE, parseDaemonFlags, resolveConfig, type DaemonConfig } from './config';
import { Daemon, type DaemonOptions, type DaemonStopOptions } from './daemon';
import { createLogger } from './logger';

/** A shutdown that takes longer than this is forced (files removed, exit 1). */
export const STOP_TIMEOUT_MS = 60_000;
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
/** BSD's EX_SOFTWARE: an internal error. */
export const EXIT_BUG = 70;
const STOP_SIGNALS: readonly NodeJS.Signals[] = ['SIGTERM', 'SIGINT'];
/** Reads credentials again (nbdkit and most daemons do the same on SIGHUP). */
const RELOAD_SIGNAL: NodeJS.Signals = 'SIGHUP';

function errorLine(error: unknown): string {
  if (error instanceof UblksnapError) return `ublksnap daemon: ${error.message} (${error.code})`;
  return `ublksnap daemon: ${error instanceof Error ? error.message : String(error)}`;
}

export interface ServeOptions extends Partial<Pick<DaemonOptions, 'startEngine' | 'frontends'>> {
  /** Called once the control socket listens. */
  onStarted?: (daemon: Daemon, logger: Logger) => void;
  /** Default: human-readable on a TTY, JSON otherwise. */
  pretty?: boolean;
}

/**
 * Runs a daemon with config until a stop signal; resolves to the exit code.
 * Installs the signal handlers and the last-resort exception handlers.
 */
export async function serve(config: DaemonConfig, options: ServeOptions = {}): Promise<number> {
  const logger = createLogger(options.pretty !== undefined ? { level: config.log_level, pretty: options.pretty } : { level: config.log_level });
  let daemon: Daemon;
  // Requests to stop may come over the control socket once it listens.
  let stop_request: (reason: string, stop_options: DaemonStopOptions) => void = () => undefined;
  try {
    daemon = await Daemon.start({
      config, logger,
      ...(options.startEngine ? { startEngine: options.startEngine } : {}),
      ...(options.frontends ? { frontends: options.frontends } : {}),
      onStopRequest: (_daemon, reason, stop_options) => stop_request(reason, stop_options),
    });
  } catch (error) {
    if (!(error instanceof UblksnapError)) logger.error({ err: error }, 'daemon failed to start');
    process.stderr.write(`${errorLine(error)}\n`);
    return EXIT_FAILURE;
  }

  const forceExit = (why: string, code: number): never => {
    logger.fatal({ why }, 'forced exit');
    daemon.removeFilesNow();
    process.exit(code);
  };
  process.on('uncaughtException', (error) => {
    logger.fatal({ err: error }, 'uncaught exception');
    forceExit('uncaught exception', EXIT_BUG);
  });
  process.on('unhandledRejection', (reason) => {
    logger.fatal({ err: reason }, 'unhandled rejection');
    forceExit('unhandled rejection', EXIT_BUG);
  });

  let exit: (code: number) => void = () => undefined;
  const stopped = new Promise<number>((resolve) => { exit = resolve; });
  /** Every stop, by signal or by `ublksnap shutdown`, is bounded the same way. */
  const beginStop = (reason: string, stop_options: DaemonStopOptions = {}): void => {
    const timer = setTimeout(() => forceExit(`shutdown took longer than ${STOP_TIMEOUT_MS} ms`, EXIT_FAILURE), STOP_TIMEOUT_MS);
    timer.unref();
    void daemon.stop(reason, stop_options).then((clean) => {
      clearTimeout(timer);
      exit(clean ? EXIT_OK : EXIT_FAILURE);
    });
  };
  stop_request = (reason, stop_options) => {
    if (!daemon.is_stopping) beginStop(reason, stop_options);
  };
  for (const signal of STOP_SIGNALS) {
    process.on(signal, () => {
      if (daemon.is_stopping) forceExit(`second ${signal} during shutdown`, EXIT_FAILURE);
      beginStop(signal);
    });
  }
  process.on(RELOAD_SIGNAL, () => {
    if (!daemon.is_stopping) daemon.reload();
  });
  options.onStarted?.(daemon, logger);
  return stopped;
}

export async function daemonCommand(argv: string[]): Promise<number> {
  let config: DaemonConfig;
  try {
    const flags = parseDaemonFlags(argv);
    if (flags.help) {
      process.stdout.write(DAEMON_USAGE);
      return EXIT_OK;
    }
    config = resolveConfig(flags);
  } catch (error) {
    // Options and config are checked before anything starts: all of it is usage.
    process.stderr.write(`${errorLine(error)}\n`);
    return EXIT_USAGE;
  }
  return serve(config);
}

if (require.main === module) {
  void daemonCommand(process.argv.slice(2)).then((code) => process.exit(code));
}
