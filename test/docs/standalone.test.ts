// Goal: the repository stands alone: no tracked file points at documents
// outside it (the project's shared notes beside the checkout), so a user
// with only this repository can follow every reference.
// Method: every file `git ls-files` lists (text files; test fixtures
// excepted) is searched for three kinds of reference that leave it:
//   - a relative path through `../shared` that resolves outside the
//     repository (from the file's own folder: `../shared/errors` inside
//     src/ is src/shared and fine);
//   - a design section cited the old way, DESIGN and a section sign;
//   - one of the shared notes by file name (the design, style, acceptance
//     and guest notes) when no tracked file has that name. Public specs
//     (NBD's proto.md) are fine: anyone can find them.
// The patterns are built from pieces so this file does not match itself.

import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { REPO_ROOT } from '../lib/daemon';

const SECTION_SIGN = '\u00a7';
const OLD_SECTION_CITE = new RegExp(`DESIGN ${SECTION_SIGN}`, 'g');
const SHARED_PATH = new RegExp(`(?:\\.\\./)+${'shared'}(?:/[\\w.-]+)*`, 'g');
/** The notes that lived beside the checkout; their content is in docs/ now. */
const OUTSIDE_NOTES = ['DESIGN', 'STYLE', 'ACCEPTANCE', 'UBLK-VM', 'GUEST', 'NOTES'];
const MARKDOWN_NAME = new RegExp(`\\b((?:${OUTSIDE_NOTES.join('|')})\\.${'md'})\\b`, 'g');
/** Files that may quote anything: recorded inputs of tests. */
const EXEMPT_PREFIXES = ['test/fixtures/'];
/** Larger files are data, not prose. */
const TEXT_BYTES_MAX = 2 * 1024 * 1024;

function trackedFiles(): string[] | null {
  try {
    return execFileSync('git', ['ls-files', '-z'], { cwd: REPO_ROOT, encoding: 'utf8' }).split('\0').filter(Boolean);
  } catch (error) {
    // Not a git checkout (an installed package): there is no list of tracked files to check.
    console.log(`  skipped: git ls-files failed in ${REPO_ROOT}: ${(error as Error).message.split('\n')[0]}`);
    return null;
  }
}

function readText(file: string): string | null {
  const bytes = readFileSync(path.join(REPO_ROOT, file));
  if (bytes.length > TEXT_BYTES_MAX || bytes.includes(0)) return null;
  return bytes.toString('utf8');
}

/** Every reference in `text` (of tracked file `file`) that leaves the repository, as `file:line: what`. */
export function outsideReferences(file: string, text: string, known_markdown: ReadonlySet<string>): string[] {
  const found: string[] = [];
  const lines = text.split('\n');
  lines.forEach((line, index) => {
    const where = `${file}:${index + 1}`;
    for (const match of line.matchAll(OLD_SECTION_CITE)) found.push(`${where}: cites "${match[0]}N" (use docs/design.md ${SECTION_SIGN}N)`);
    for (const match of line.matchAll(SHARED_PATH)) {
      const resolved = path.resolve(REPO_ROOT, path.dirname(file), match[0]);
      if (path.relative(REPO_ROOT, resolved).startsWith('..')) found.push(`${where}: ${match[0]} is outside the repository`);
    }
    for (const match of line.matchAll(MARKDOWN_NAME)) {
      const name = match[1] as string;
      if (!known_markdown.has(name)) found.push(`${where}: ${name} is no file of the repository`);
    }
  });
  return found;
}

test('the rules catch what they are meant to (and only that)', () => {
  const known = new Set(['README.md', 'design.md']);
  assert.equal(outsideReferences('src/cli/x.ts', "import { a } from '../shared/errors';", known), [], 'src/shared is inside');
  assert.is(outsideReferences('README.md', `See \`../shared/${OUTSIDE_NOTES[0]}.md\`.`, known).length, 2, 'outside path and unknown file');
  assert.is(outsideReferences('src/a.ts', `// per DESIGN ${SECTION_SIGN}7`, known).length, 1);
  assert.equal(outsideReferences('README.md', 'see docs/design.md and README.md', known), []);
  assert.is(outsideReferences('bench/README.md', `${OUTSIDE_NOTES[4]}.md measured`, known).length, 1);
  assert.equal(outsideReferences('src/nbd.ts', 'see proto.md', known), [], 'a public spec is fine');
});

test('no tracked file refers to documents outside the repository', () => {
  const files = trackedFiles();
  if (files === null) return;
  const known_markdown = new Set(files.filter((file) => file.endsWith('.md')).map((file) => path.basename(file)));
  const found: string[] = [];
  for (const file of files) {
    if (EXEMPT_PREFIXES.some((prefix) => file.startsWith(prefix))) continue;
    const text = readText(file);
    if (text !== null) found.push(...outsideReferences(file, text, known_markdown));
  }
  assert.equal(found, [], `references outside the repository:\n${found.join('\n')}`);
});

test.run();
