// The shell recipes of the docs, as the docs show them. A recipe is a
// fenced `sh` block right after a marker line:
//
//   <!-- recipe: NAME -->            run on the host by test/docs/recipes.test.ts
//   <!-- recipe: NAME guest -->      run in the ublk guest (test/guest/*.guest.ts)
//   <!-- recipe: NAME install -->    run by test/install/*.test.ts (installs the package)
//
// The text between the fences is returned byte for byte: the tests run
// exactly what a reader copies.

import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';

export interface Recipe {
  /** The file it comes from, relative to the checkout. */
  file: string;
  name: string;
  /** True for recipes that need the ublk guest. */
  guest: boolean;
  /** True for recipes that install the package (test/install runs them, not the daemon recipes test). */
  install: boolean;
  script: string;
}

const RECIPE_PATTERN = /<!-- recipe: ([A-Za-z0-9-]+)( guest| install)? -->\n```sh\n([\s\S]*?)```\n/g;
/** Any fenced shell block: every one in docs/ must be a recipe. */
const SHELL_BLOCK_PATTERN = /^```(?:sh|bash|shell)\n/gm;

/** The files that hold recipes: README.md and every docs/*.md. */
export function recipeFiles(repo_root: string): string[] {
  const docs = readdirSync(path.join(repo_root, 'docs')).filter((name) => name.endsWith('.md')).sort().map((name) => path.join('docs', name));
  return ['README.md', ...docs];
}

export function recipesOf(repo_root: string, file: string): Recipe[] {
  const text = readFileSync(path.join(repo_root, file), 'utf8');
  return [...text.matchAll(RECIPE_PATTERN)].map((match) => ({
    file, name: match[1]!, guest: match[2] === ' guest', install: match[2] === ' install', script: match[3]!,
  }));
}

/** Fenced shell blocks in file that carry no recipe marker. */
export function unmarkedShellBlocks(repo_root: string, file: string): number {
  const text = readFileSync(path.join(repo_root, file), 'utf8');
  return [...text.matchAll(SHELL_BLOCK_PATTERN)].length - recipesOf(repo_root, file).length;
}

/** One recipe by name, from any recipe file; throws when it is missing or named twice. */
export function recipe(repo_root: string, name: string): Recipe {
  const found = recipeFiles(repo_root).flatMap((file) => recipesOf(repo_root, file)).filter((candidate) => candidate.name === name);
  if (found.length !== 1) throw new Error(`recipe ${name}: found ${found.length} times in README.md and docs/*.md`);
  return found[0]!;
}
