#!/usr/bin/env node
// Checks that src/ is layered: every import goes to the same layer or one
// below it, frontends reach the engine only through its public API, and no
// file imports itself back through a cycle. Exits 1 and lists each offence.
//
//   layer 0  src/shared, src/native   layouts, Atomics protocols, system calls
//   layer 1  src/cow                  the one copy-on-write implementation
//   layer 2  src/actors               worker entry points, session hosting
//   layer 3  src/engine               control plane (main thread)
//   layer 4  src/frontends            peers: in-process, nbd, ublk
//   layer 5  src/ipc                  JSON-RPC protocol, server, client
//   layer 6  src/backup               backup, restore, verify: an NBD and IPC client
//                                     of the daemon (never its internals)
//   layer 7  src/daemon               the daemon
//   layer 8  src/cli                  the command line
//
// The core (shared, cow, actors, engine) names no frontend, not even in a
// comment: a frontend is a module that plugs in, never a branch there.
//
// Usage: node scripts/check-layers.js [SRC_DIR]   (default: src)

'use strict';
const fs = require('node:fs');
const path = require('node:path');

const LAYER_BY_FOLDER = { shared: 0, native: 0, cow: 1, actors: 2, engine: 3, frontends: 4, ipc: 5, backup: 6, daemon: 7, cli: 8 };
/** Names no file of the core (shared, cow, actors, engine) may contain, even in a comment. */
const FRONTEND_NAMES = /\b(nbd|ublk|transmission)\b/i;
/** The core: everything below the frontends but the addon's face, which speaks for the kernel's drivers. */
const CORE_FOLDERS = new Set(['shared', 'cow', 'actors', 'engine']);
const IMPORT_PATTERN = /(?:from\s+|import\(|require\()['"](\.\.?\/[^'"]+)['"]/g;

function listFiles(dir) {
  const found = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) found.push(...listFiles(full));
    else if (entry.name.endsWith('.ts')) found.push(full);
  }
  return found;
}

function layerOf(src, file) {
  const folder = path.relative(src, file).split(path.sep)[0];
  if (!(folder in LAYER_BY_FOLDER)) throw new Error(`${file}: folder ${folder} has no layer`);
  return LAYER_BY_FOLDER[folder];
}

function resolveImport(file, spec) {
  const base = path.resolve(path.dirname(file), spec);
  for (const candidate of [`${base}.ts`, path.join(base, 'index.ts')]) if (fs.existsSync(candidate)) return candidate;
  return null;
}

function frontendOf(src, file) {
  const parts = path.relative(src, file).split(path.sep);
  return parts[0] === 'frontends' && parts.length > 2 ? parts[1] : null;
}

function check(src) {
  const files = listFiles(src);
  const problems = [];
  const edges = new Map();
  for (const file of files) {
    const text = fs.readFileSync(file, 'utf8');
    const targets = [];
    for (const match of text.matchAll(IMPORT_PATTERN)) {
      const target = resolveImport(file, match[1]);
      if (target === null) { problems.push(`${file}: cannot resolve ${match[1]}`); continue; }
      targets.push(target);
      const from = layerOf(src, file);
      const to = layerOf(src, target);
      const rel = path.relative(src, target);
      if (to > from) problems.push(`${path.relative(src, file)} imports upward: ${rel}`);
      if (from === 4 && to === 3 && rel !== path.join('engine', 'api.ts')) {
        problems.push(`${path.relative(src, file)} reaches into the engine: ${rel} (use engine/api.ts)`);
      }
      const own = frontendOf(src, file);
      const theirs = frontendOf(src, target);
      if (own !== null && theirs !== null && own !== theirs) problems.push(`${path.relative(src, file)} imports another frontend: ${rel}`);
    }
    if (CORE_FOLDERS.has(path.relative(src, file).split(path.sep)[0])) {
      text.split('\n').forEach((line, index) => {
        if (FRONTEND_NAMES.test(line)) problems.push(`${path.relative(src, file)}:${index + 1} names a frontend: ${line.trim()}`);
      });
    }
    edges.set(file, targets);
  }
  problems.push(...findCycles(src, edges));
  return problems;
}

function findCycles(src, edges) {
  const state = new Map();
  const stack = [];
  const cycles = [];
  const visit = (file) => {
    state.set(file, 'open');
    stack.push(file);
    for (const next of edges.get(file) ?? []) {
      if (state.get(next) === 'open') {
        cycles.push(`import cycle: ${stack.slice(stack.indexOf(next)).concat(next).map((f) => path.relative(src, f)).join(' → ')}`);
      } else if (!state.has(next)) visit(next);
    }
    stack.pop();
    state.set(file, 'done');
  };
  for (const file of edges.keys()) if (!state.has(file)) visit(file);
  return cycles;
}

if (require.main === module) {
  const src = path.resolve(process.argv[2] ?? path.join(__dirname, '..', 'src'));
  const problems = check(src);
  for (const problem of problems) console.log(problem);
  console.log(problems.length === 0 ? 'layers: ok' : `layers: ${problems.length} problem(s)`);
  process.exit(problems.length === 0 ? 0 : 1);
}

module.exports = { check };
