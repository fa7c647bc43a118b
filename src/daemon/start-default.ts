// `npm start`: the daemon on an embedded default, for a first look.
//
//   state dir    <checkout>/state            (git-ignored; UBLKSNAP_STATE_DIR
//                                            or --state-dir move it)
//   demo volume  <checkout>/state/demo.img   1 GiB, sparse, attached as `demo`
//                                            (and served by NBD when built in)
//   socket       the default path (paths.ts)  so `npx ublksnap …` from another
//                                            terminal finds it with no flag
//
// Nothing is exported to the environment: the CLI computes the same default
// socket path as the daemon does. Then it prints the next commands to try.

import { closeSync, existsSync, ftruncateSync, mkdirSync, openSync } from 'node:fs';
import path from 'node:path';
import { GiB } from '../shared/units';
import { UblksnapError } from '../shared/errors';
import { parseDaemonFlags, resolveConfig } from './config';
import { EXIT_FAILURE, EXIT_USAGE, serve } from './main';
import { PRIVATE_DIR_MODE, packageRoot } from './paths';

export const DEMO_VOLUME_NAME = 'demo';
export const DEMO_VOLUME_BYTES = 1 * GiB;
const DEMO_FILE_NAME = 'demo.img';
/** The demo volume is the user's data like any other: owner only. */
const DEMO_FILE_MODE = 0o600;

/** Creates the sparse demo volume once; an existing one (and its data) is kept. */
export function ensureDemoVolume(file: string, size_bytes: number): boolean {
  if (existsSync(file)) return false;
  mkdirSync(path.dirname(file), { recursive: true, mode: PRIVATE_DIR_MODE });
  const fd = openSync(file, 'wx', DEMO_FILE_MODE);
  try {
    ftruncateSync(fd, size_bytes);
  } finally {
    closeSync(fd);
  }
  return true;
}

function nextSteps(root: string, state_dir: string, socket: string, nbd: string | undefined): string {
  const cli = 'npx ublksnap';
  const lines = [
    '',
    `ublksnap is running: volume '${DEMO_VOLUME_NAME}' is ${path.join(state_dir, DEMO_FILE_NAME)} (1 GiB, sparse).`,
    `Control socket: ${socket}`,
    ...(nbd ? [`NBD export:     ${nbd}`] : []),
    '',
    `Try, from another terminal (cd ${root}):`,
    `  ${cli} version`,
    `  ${cli} status`,
    `  ${cli} cbtinfo -d ${DEMO_VOLUME_NAME}`,
    `  id=$(${cli} snapshot_create -d ${DEMO_VOLUME_NAME} -f ${state_dir} -l 256M)`,
    `  ${cli} snapshot_take -i $id`,
    `  ${cli} snapshot_info -d ${DEMO_VOLUME_NAME}`,
    ...(nbd ? [`  nbdinfo '${nbd.replace(`/${DEMO_VOLUME_NAME}?`, `/${DEMO_VOLUME_NAME}%40'$id'?`)}'`] : []),
    `  ${cli} snapshot_waitevent -i $id -t 1000`,
    `  ${cli} readcbtmap -d ${DEMO_VOLUME_NAME} -f ${path.join(state_dir, 'demo.cbt')}`,
    `  ${cli} snapshot_destroy -i $id`,
    `  ${cli} --help`,
    '',
    'Stop with Ctrl-C.',
    '',
  ];
  return `${lines.join('\n')}\n`;
}

export async function startDefault(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const root = packageRoot();
  let config;
  let demo_file: string;
  try {
    // Extra flags still work: `npm start -- --log-level debug`. The state dir
    // is the checkout's unless a flag or UBLKSNAP_STATE_DIR says otherwise.
    const flags = parseDaemonFlags(argv);
    const state_dir = flags.state_dir ?? (env.UBLKSNAP_STATE_DIR || path.join(root, 'state'));
    config = resolveConfig({ ...flags, state_dir }, env);
    demo_file = path.join(config.state_dir, DEMO_FILE_NAME);
    ensureDemoVolume(demo_file, DEMO_VOLUME_BYTES);
  } catch (error) {
    const reason = error instanceof UblksnapError ? `${error.message} (${error.code})` : String(error);
    process.stderr.write(`ublksnap start: ${reason}\n`);
    return error instanceof UblksnapError && error.code === 'EINVAL' ? EXIT_USAGE : EXIT_FAILURE;
  }
  const ready = config;
  ready.volumes = [{ path: demo_file, name: DEMO_VOLUME_NAME }, ...ready.volumes];
  return serve(ready, {
    onStarted: (daemon) => {
      // stderr: stdout may carry JSON log lines that a collector parses.
      process.stderr.write(nextSteps(root, ready.state_dir, ready.socket, daemon.addressesOf(DEMO_VOLUME_NAME).nbd));
    },
  });
}

if (require.main === module) {
  void startDefault(process.argv.slice(2)).then((code) => process.exit(code));
}
