// Goal: the manual page (man/ublksnap.8) lists every command and every
// option the CLI's parser knows (each command's own, the common ones and
// the daemon's flags), is what scripts/gen-man-page.js makes of the tables
// today (so it cannot drift), renders without a groff warning, and every
// command's --help lists each of its options too.
// Method: the tables are imported from the compiled CLI; the page is read
// as checked in, compared with the generator's output, rendered by groff
// to text, and searched; `ublksnap COMMAND --help` runs for real.

import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { COMMON_OPTIONS, type OptionSpec } from '../../src/cli/args';
import { COMMANDS } from '../../src/cli/commands';
import { DAEMON_OPTIONS } from '../../src/daemon/config';
import { CLI_PATH, REPO_ROOT, runNode } from '../lib/daemon';
import { gate } from '../lib/system';

const PAGE = path.join(REPO_ROOT, 'man', 'ublksnap.8');
// eslint-disable-next-line @typescript-eslint/no-require-imports
const generator = require(path.join(REPO_ROOT, 'scripts', 'gen-man-page.js')) as { page(): string };
const rendering = gate(test, 'docs/manual rendering', { tools: ['groff'] });

/** The page as plain text: roff's escaped hyphens and font switches undone. */
function pageText(): string {
  return readFileSync(PAGE, 'utf8').replace(/\\-/g, '-').replace(/\\f[BIRP]/g, '');
}

function spellings(option: Pick<OptionSpec, 'name' | 'short'>): string[] {
  return [`--${option.name}`, ...(option.short ? [`-${option.short}`] : [])];
}

test('the checked-in page is what the generator makes of the tables now', () => {
  assert.ok(readFileSync(PAGE, 'utf8') === generator.page(),
    'man/ublksnap.8 is stale: run `npx tsc -p . && node scripts/gen-man-page.js` and commit it');
});

test('every command and every option appears in the page', () => {
  const text = pageText();
  const missing: string[] = [];
  for (const command of COMMANDS) {
    if (!new RegExp(`^\\.SS ${command.name}$`, 'm').test(text)) missing.push(`command ${command.name}`);
    const section = text.split(`.SS ${command.name}\n`)[1]?.split('\n.SS ')[0] ?? '';
    for (const option of command.options) {
      for (const spelling of spellings(option)) if (!section.includes(spelling)) missing.push(`${command.name} ${spelling}`);
    }
  }
  const daemon = text.split('.SS daemon\n')[1]?.split('\n.SH ')[0] ?? '';
  for (const [name, spec] of Object.entries(DAEMON_OPTIONS)) {
    for (const spelling of spellings({ name, short: (spec as { short?: string }).short })) {
      if (!daemon.includes(spelling)) missing.push(`daemon ${spelling}`);
    }
  }
  const common = text.split('.SH COMMON OPTIONS\n')[1]?.split('\n.SH ')[0] ?? '';
  for (const option of COMMON_OPTIONS) for (const spelling of spellings(option)) if (!common.includes(spelling)) missing.push(`common ${spelling}`);
  assert.equal(missing, [], `not in man/ublksnap.8: ${missing.join(', ')}`);
});

rendering.test('groff renders it without a warning', () => {
  const rendered = execFileSync('groff', ['-man', '-ww', '-Tutf8', '-P-c', PAGE], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  // -P-c: overstrike for bold (x\bx), which is taken out here.
  const output = rendered.replace(/.\x08/g, '');
  assert.ok(output.includes('snapshot_create'), 'rendered text holds the commands');
  const warnings = execFileSync('sh', ['-c', `groff -man -ww -z "${PAGE}" 2>&1`], { encoding: 'utf8' });
  assert.is(warnings, '', 'no warning');
});

test('COMMAND --help lists every option of the command', async () => {
  for (const command of COMMANDS) {
    const result = await runNode(CLI_PATH, [command.name, '--help']);
    assert.is(result.code, 0, `${command.name} --help: ${result.stderr}`);
    for (const option of [...command.options, ...COMMON_OPTIONS]) {
      for (const spelling of spellings(option)) assert.ok(result.stdout.includes(spelling), `${command.name} --help lacks ${spelling}`);
    }
  }
});

test.run();
