// The harness's set-up step: the tools the NBD comparison drives, installed
// with apt-get when one is missing (as root; otherwise a clear message with
// the command to run), and their versions for the results file.
//
//   nbdkit               nbdkit (the file plugin ships in the package)
//   qemu-storage-daemon  qemu-system-common
//   qemu-img             qemu-utils
//   nbdcopy, nbdinfo     libnbd-bin
//   fio                  fio (Debian's is built with the nbd engine)

import { execFileSync, spawnSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import path from 'node:path';

export interface Tool {
  command: string;
  package: string;
  /** Arguments that print the version on the first line. */
  version_args: string[];
}

export const TOOLS: readonly Tool[] = [
  { command: 'nbdkit', package: 'nbdkit', version_args: ['--version'] },
  { command: 'qemu-storage-daemon', package: 'qemu-system-common', version_args: ['--version'] },
  { command: 'qemu-img', package: 'qemu-utils', version_args: ['--version'] },
  { command: 'nbdcopy', package: 'libnbd-bin', version_args: ['--version'] },
  { command: 'nbdinfo', package: 'libnbd-bin', version_args: ['--version'] },
  { command: 'fio', package: 'fio', version_args: ['--version'] },
];

/** apt-get update + install of five packages: minutes on a slow mirror, never forever. */
const APT_TIMEOUT_MS = 600_000;
const VERSION_TIMEOUT_MS = 10_000;
const ROOT_UID = 0;
const SBIN_DIRS = ['/usr/local/sbin', '/usr/sbin', '/sbin'];

export function findExecutable(command: string): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter).filter(Boolean), ...SBIN_DIRS];
  for (const dir of dirs) {
    const candidate = path.join(dir, command);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not in this directory (ENOENT) or not executable (EACCES): try the next.
    }
  }
  return undefined;
}

function missingPackages(): string[] {
  return [...new Set(TOOLS.filter((tool) => findExecutable(tool.command) === undefined).map((tool) => tool.package))];
}

function runLoud(command: string, args: string[], log: (line: string) => void): void {
  log(`setup: ${command} ${args.join(' ')}`);
  const result = spawnSync(command, args, {
    stdio: ['ignore', 'inherit', 'inherit'],
    timeout: APT_TIMEOUT_MS,
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
  if (result.error !== undefined) throw new Error(`setup: ${command} failed: ${result.error.message}`);
  if (result.status !== 0) throw new Error(`setup: ${command} ${args.join(' ')} exited with status ${result.status}`);
}

/** Installs whatever is missing (printing each command), then checks fio's nbd engine. Returns tool versions. */
export function ensureTools(log: (line: string) => void): Record<string, string> {
  const missing = missingPackages();
  if (missing.length > 0) {
    const install = ['install', '-y', '--no-install-recommends', ...missing];
    if (process.getuid?.() !== ROOT_UID) {
      throw new Error(`setup: missing packages ${missing.join(' ')}; as root run: apt-get update && apt-get ${install.join(' ')}`);
    }
    log(`setup: installing ${missing.join(', ')} (the NBD comparison drives them)`);
    runLoud('apt-get', ['update', '-qq'], log);
    runLoud('apt-get', install, log);
    const still = missingPackages();
    if (still.length > 0) throw new Error(`setup: still missing after apt-get install: ${still.join(' ')}`);
  }
  const engines = spawnSync('fio', ['--enghelp=nbd'], { encoding: 'utf8', timeout: VERSION_TIMEOUT_MS });
  if (engines.status !== 0 || !/uri/.test(engines.stdout)) {
    throw new Error('setup: this fio has no nbd ioengine (fio --enghelp=nbd); Debian/Ubuntu fio ≥ 3.16 has it');
  }
  const versions: Record<string, string> = {};
  for (const tool of TOOLS) {
    const output = execFileSync(tool.command, tool.version_args, { encoding: 'utf8', timeout: VERSION_TIMEOUT_MS });
    versions[tool.command] = output.split('\n')[0]!.trim();
  }
  return versions;
}
