// The test command: runs every uvu test file in its own Node process, one
// after another, under a hard timeout, and ends with the one line CI reads:
// `N passed, N failed` (`, N skipped` when some were skipped).
//
// Why one process per file: tests start workers, open devices and spawn
// daemons; a crash or hang in one file must cost that file only, and every
// file starts with a clean heap. Files run serially because the machines
// have two cores and several tests measure concurrency.
//
// Usage: node dist/test/run.js [SUBSTRING...]  (run only matching files)

import { spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';

/** A file that runs longer than this is killed and counted as one failure. */
const FILE_TIMEOUT_MS_DEFAULT = 300_000;
/** Longer budgets for files that drive real tools or many workers. */
const FILE_TIMEOUT_MS_BY_NAME: Record<string, number> = {
  // boots a TCG guest (cold: kernel download + depmod) and runs every guest
  // program in it, each within its own budget (test/vm/guest-suite.test.ts):
  // nine programs (typically 1-4 min each on a quiet machine), a boot and a cold setup
  'guest-suite.test.js': 60 * 60_000,
  // npm pack (a TypeScript build) and npm install -g (an addon build) of the package
  'npm-install.test.js': 15 * 60_000,
};
const ANSI_ESCAPE = /\u001b\[[0-9;]*m/g;

interface FileResult {
  file: string;
  passed: number;
  failed: number;
  skipped: number;
  duration_ms: number;
}

function findTestFiles(dir: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync(dir).sort()) {
    const full = path.join(dir, entry);
    if (statSync(full).isDirectory()) found.push(...findTestFiles(full));
    else if (entry.endsWith('.test.js')) found.push(full);
  }
  return found;
}

function summaryNumber(output: string, label: string): number | undefined {
  const match = new RegExp(`^\\s*${label}:\\s+(\\d+)`, 'm').exec(output);
  return match ? Number(match[1]) : undefined;
}

function runFile(file: string): Promise<FileResult> {
  const started = Date.now();
  const timeout_ms = FILE_TIMEOUT_MS_BY_NAME[path.basename(file)] ?? FILE_TIMEOUT_MS_DEFAULT;
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--enable-source-maps', file], {
      env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let output = '';
    const collect = (chunk: Buffer): void => {
      const text = chunk.toString();
      output += text;
      process.stdout.write(text);
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      // The child leads its own process group: kill it and whatever it spawned.
      try { process.kill(-child.pid!, 'SIGKILL'); } catch { child.kill('SIGKILL'); }
    }, timeout_ms);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const clean = output.replace(ANSI_ESCAPE, '');
      const total = summaryNumber(clean, 'Total');
      const passed = summaryNumber(clean, 'Passed');
      const skipped = summaryNumber(clean, 'Skipped') ?? 0;
      const duration_ms = Date.now() - started;
      if (timedOut || total === undefined || passed === undefined) {
        const why = timedOut ? `timed out after ${timeout_ms} ms` : `exited (code ${code}, signal ${signal}) without a summary`;
        console.log(`\n✘ ${file}: ${why}`);
        resolve({ file, passed: passed ?? 0, failed: Math.max(1, (total ?? 0) - (passed ?? 0)), skipped, duration_ms });
        return;
      }
      // uvu counts skipped tests outside Total.
      let failed = total - passed;
      if (failed === 0 && code !== 0) {
        console.log(`\n✘ ${file}: all tests passed but the process exited with code ${code}`);
        failed = 1;
      }
      resolve({ file, passed, failed, skipped, duration_ms });
    });
  });
}

async function main(): Promise<void> {
  const root = path.resolve(__dirname);
  const filters = process.argv.slice(2);
  // Match against the path under dist/test only: the checkout's own path (a
  // worktree named wt-vm, say) would otherwise match every file.
  const files = findTestFiles(root).filter((file) =>
    filters.length === 0 || filters.some((filter) => path.relative(root, file).includes(filter)));
  const results: FileResult[] = [];
  for (const file of files) {
    console.log(`\n── ${path.relative(root, file)}`);
    results.push(await runFile(file));
  }
  console.log('\nper file:');
  for (const r of results) {
    const mark = r.failed > 0 ? '✘' : '✔';
    console.log(`  ${mark} ${path.relative(root, r.file).padEnd(44)} ${r.passed} passed, ${r.failed} failed, ${r.skipped} skipped  ${(r.duration_ms / 1000).toFixed(1)} s`);
  }
  const sum = (key: 'passed' | 'failed' | 'skipped'): number => results.reduce((n, r) => n + r[key], 0);
  const skipped = sum('skipped');
  const failed = sum('failed') + (files.length === 0 ? 1 : 0);
  console.log(`${sum('passed')} passed, ${failed} failed${skipped > 0 ? `, ${skipped} skipped` : ''}`);
  process.exitCode = failed > 0 ? 1 : 0;
}

void main();
