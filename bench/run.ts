// `npm run bench [-- OPTIONS]`: runs the benchmarks, prints Markdown tables
// and one PASS/FAIL line per goal (docs/design.md §10's last), and writes the figures
// as JSON (and the NBD chart as SVG) to bench/results/ (ignored by git).
//
//   --quick              small image, fewer rounds: under 3 minutes
//   --only=PART          micro | engine | nbd | ublk (default: all four; ublk
//                        prints SKIP when the ublk guest cannot boot)
//   --rounds=N           NBD rounds (default 3, quick 2)
//   --image-mib=N        NBD image size (default 1024, quick 128)
//   --systems=ID,ID      NBD: only these systems (debugging)
//   --profile[=DIR]      NBD: run ublksnap's servers under node --cpu-prof
//                        (default DIR bench/results/profiles-STAMP)
//   --no-take            NBD: skip the take-latency step
//   --ublk-rounds=N      ublk: rounds in the guest (default 3, quick 2)
//   --ublk-runtime=S     ublk: seconds per fio job (default 5, quick 3)
//
// Progress goes to stderr; stdout carries the report only.

import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { runEngineBench } from './engine';
import { runMicro } from './micro';
import { runNbdBench } from './nbd/suite';
import { runUblkBench } from './ublk/suite';

const PARTS = ['micro', 'engine', 'nbd', 'ublk'];

function positive(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  const number = Number(value);
  if (!Number.isInteger(number) || number < 1) throw new Error(`--${name} must be a positive integer, got ${value}`);
  return number;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      only: { type: 'string' },
      rounds: { type: 'string' },
      'image-mib': { type: 'string' },
      systems: { type: 'string' },
      profile: { type: 'string' },
      'no-take': { type: 'boolean', default: false },
      'ublk-rounds': { type: 'string' },
      'ublk-runtime': { type: 'string' },
    },
    // `--profile` alone is allowed: parseArgs wants a value, so it is rewritten below.
    args: process.argv.slice(2).map((arg) => (arg === '--profile' ? '--profile=' : arg)),
  });
  const quick = values.quick === true;
  const only = values.only;
  if (only !== undefined && !PARTS.includes(only)) throw new Error(`--only must be one of ${PARTS.join(', ')}, got ${only}`);
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const dir = path.join(__dirname, '..', '..', 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const results: Record<string, unknown> = { date: new Date().toISOString(), quick };
  const goal_lines: string[] = [];
  if (only === undefined || only === 'micro') {
    const text = await runMicro(quick);
    console.log(`## Shared-memory core\n\n${text}\n`);
    results.micro = text;
  }
  if (only === undefined || only === 'engine') {
    const engine = await runEngineBench(quick);
    console.log(`## Engine\n\n${engine.text}\n`);
    results.engine = engine;
    goal_lines.push(...engine.goals.map((goal) =>
      `${goal.pass ? 'PASS' : 'FAIL'} engine: ${goal.name}: ${goal.ratio.toFixed(2)}× (target ${goal.target}×)`));
  }
  if (only === undefined || only === 'nbd') {
    const profile_dir = values.profile === undefined ? undefined : (values.profile === '' ? path.join(dir, `profiles-${stamp}`) : path.resolve(values.profile));
    const nbd = await runNbdBench({
      quick,
      rounds: positive(values.rounds, 'rounds'),
      image_mib: positive(values['image-mib'], 'image-mib'),
      systems: values.systems?.split(','),
      profile_dir,
      skip_take: values['no-take'] === true,
      log: (line) => console.error(line),
    });
    console.log(`## NBD: ublksnap vs nbdkit and QEMU (docs/design.md §10)\n\n${nbd.text}\n`);
    const svg = path.join(dir, `nbd-${stamp}.svg`);
    writeFileSync(svg, nbd.svg);
    copyFileSync(svg, path.join(dir, 'nbd-latest.svg'));
    console.log(`chart: ${path.relative(process.cwd(), svg)}`);
    if (profile_dir !== undefined) console.log(`profiles: ${path.relative(process.cwd(), profile_dir)} (node dist/bench/profile-summary.js DIR)`);
    results.nbd = nbd.json;
    goal_lines.push(...nbd.goal_lines);
  }
  if (only === undefined || only === 'ublk') {
    const ublk = await runUblkBench({
      quick,
      rounds: positive(values['ublk-rounds'], 'ublk-rounds'),
      runtime_s: positive(values['ublk-runtime'], 'ublk-runtime'),
      log: (line) => console.error(line),
    });
    if (ublk.text !== '') console.log(`## ublk: ublksnap's block device vs the loop driver (TCG guest)\n\n${ublk.text}\n`);
    results.ublk = ublk.json;
    goal_lines.push(...ublk.goal_lines);
  }
  const file = path.join(dir, `bench-${stamp}.json`);
  writeFileSync(file, JSON.stringify(results, null, 2));
  console.log(`results: ${path.relative(process.cwd(), file)}`);
  for (const line of goal_lines) console.log(line);
}

main().catch((error: unknown) => {
  console.error(`bench: ${(error as Error).message}`);
  process.exit(1);
});
