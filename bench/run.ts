// `npm run bench [-- --quick] [-- --only=micro|engine]`: runs the
// benchmarks, prints Markdown tables and one PASS/FAIL line per goal, and
// writes the figures as JSON to bench/results/ (ignored by git).

import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { runEngineBench } from './engine';
import { runMicro } from './micro';

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false }, only: { type: 'string' } } });
  const quick = values.quick === true;
  const only = values.only;
  if (only !== undefined && !['micro', 'engine'].includes(only)) throw new Error(`--only must be micro or engine, got ${only}`);
  const results: Record<string, unknown> = { date: new Date().toISOString(), quick };
  const goals: { name: string; ratio: number; target: number; pass: boolean }[] = [];
  if (only === undefined || only === 'micro') {
    const text = await runMicro(quick);
    console.log(`## Shared-memory core\n\n${text}\n`);
    results.micro = text;
  }
  if (only === undefined || only === 'engine') {
    const engine = await runEngineBench(quick);
    console.log(`## Engine\n\n${engine.text}\n`);
    results.engine = engine;
    goals.push(...engine.goals);
  }
  const dir = path.join(__dirname, '..', '..', 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `bench-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeFileSync(file, JSON.stringify(results, null, 2));
  console.log(`results: ${path.relative(process.cwd(), file)}`);
  for (const goal of goals) console.log(`${goal.pass ? 'PASS' : 'FAIL'} ${goal.name}: ${goal.ratio.toFixed(2)}× (target ${goal.target}×)`);
}

main().catch((error: unknown) => {
  console.error(`bench: ${(error as Error).message}`);
  process.exit(1);
});
