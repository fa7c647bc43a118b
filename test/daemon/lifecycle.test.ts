// Goal: the daemon's life cycle as an operator sees it: an owner-only
// socket, a pid file, refusal of a second daemon (live socket, or a state
// dir in use), recovery from a crash (stale socket and pid file), clean
// exit 0 on SIGTERM and SIGINT even under load, leaving no socket, pid
// file, temporary file or difference-storage file behind (the saved state of
// the volumes excepted: test/daemon/persist.test.ts); bad options and
// configs fail with one line and exit 2.
// Method: spawned `ublksnap daemon` processes in scratch dirs; load from
// CLI processes and raw IPC clients running while the signal lands; the
// directories are listed before and after.

import { readdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { IpcClient } from '../../src/ipc/client';
import {
  CLI_PATH, TestDaemon, disposeDaemon, exists, hardTimeout, removeScratchDir, runNode, scratchDir, sparseFile, startDaemon,
} from '../lib/daemon';

const MiB = 1 << 20;

hardTimeout(240_000, 'daemon/lifecycle');

/** What a clean stop leaves in the state dir on purpose (volume-persistence.ts): one saved map per volume, the record of volumes. */
function withSavedStateNamed(files: string[]): string[] {
  return files.map((file) => file.replace(/^state\/cbt\/[0-9a-f]{32}\.cbt$/, 'state/cbt/*.cbt'));
}

/** Every file under dir, relative, sorted. */
function listing(dir: string): string[] {
  const out: string[] = [];
  const walk = (sub: string): void => {
    for (const entry of readdirSync(path.join(dir, sub), { withFileTypes: true })) {
      const relative = path.join(sub, entry.name);
      if (entry.isDirectory()) walk(relative);
      else out.push(relative);
    }
  };
  walk('');
  return out.sort();
}

test('socket 0600, state dir 0700, pid file, JSON logs when not on a terminal', async () => {
  const daemon = await startDaemon('life-basic');
  try {
    assert.is(statSync(daemon.socket).mode & 0o777, 0o600);
    assert.ok(statSync(daemon.socket).isSocket());
    assert.is(statSync(daemon.state_dir).mode & 0o777, 0o700);
    assert.is((await import('node:fs')).readFileSync(daemon.pid_file, 'utf8'), `${daemon.pid}\n`);
    const first = daemon.logs.split('\n').find((line) => line.includes('daemon started')) as string;
    const record = JSON.parse(first);
    assert.is(record.socket, daemon.socket);
    assert.is(record.level, 30);
  } finally {
    await disposeDaemon(daemon);
  }
});

test('a second daemon on a live socket exits 1 with one line; the first keeps serving', async () => {
  const daemon = await startDaemon('life-second');
  try {
    const second = await runNode(CLI_PATH, ['daemon', '--socket', daemon.socket, '--state-dir', daemon.file('other-state')]);
    assert.is(second.code, 1);
    assert.equal(second.stderr.split('\n').filter(Boolean), [`ublksnap daemon: a daemon is already listening on ${daemon.socket} (EBUSY)`]);
    assert.is(second.stdout, '');
    const same_state = await runNode(CLI_PATH, ['daemon', '--socket', daemon.file('other.sock'), '--state-dir', daemon.state_dir]);
    assert.is(same_state.code, 1, same_state.stderr);
    assert.match(same_state.stderr, new RegExp(`^ublksnap daemon: state directory in use by a running daemon \\(pid ${daemon.pid}, .*\\); stop it first, or give another --state-dir \\(EBUSY\\)\\n$`));
    assert.not.ok(exists(daemon.file('other.sock')));
    assert.is(await daemon.ok(['version']), await daemon.ok(['version']));
  } finally {
    await disposeDaemon(daemon);
  }
});

test('after a crash (SIGKILL) the stale socket and pid file are replaced', async () => {
  const daemon = await startDaemon('life-crash');
  try {
    const killed = await daemon.stop('SIGKILL');
    assert.is(killed.signal, 'SIGKILL');
    assert.ok(exists(daemon.socket), 'the crash left the socket');
    assert.ok(exists(daemon.pid_file), 'the crash left the pid file');
    const refused = await runNode(CLI_PATH, ['--socket', daemon.socket, 'version']);
    assert.match(refused.stderr, /\(a stale socket: the daemon is not running\) \(ENOENT\)\n$/);
    await daemon.start();
    assert.match(daemon.logs, /removing stale socket/);
    assert.match(await daemon.ok(['version']), /^\d+\.\d+\.\d+\.\d+\n$/);
  } finally {
    await disposeDaemon(daemon);
  }
});

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  test(`${signal}: exit 0, no socket, no pid file, no temporary or storage file`, async () => {
    const daemon = await startDaemon(`life-${signal}`);
    try {
      sparseFile(daemon.file('v.img'), 8 * MiB);
      await daemon.ok(['attach', '-d', 'v.img']);
      const id = (await daemon.ok(['snapshot_create', '-d', 'v.img', '-f', daemon.file('diff.bin'), '-l', '16M'])).trim();
      await daemon.ok(['snapshot_take', '-i', id]);
      assert.ok(exists(daemon.file('diff.bin')), 'the storage file exists while the snapshot lives');
      const exit = await daemon.stop(signal);
      assert.equal(exit, { code: 0, signal: null }, daemon.logs);
      assert.equal(withSavedStateNamed(listing(daemon.dir)), ['state/cbt/*.cbt', 'state/volumes.json', 'v.img'],
        'only the volume and its saved state are left');
      assert.match(daemon.logs, /"clean":true,"msg":"daemon stopped"/);
    } finally {
      await disposeDaemon(daemon);
    }
  });
}

test('SIGTERM during load: every client ends (answered or refused), exit 0, nothing left behind', async () => {
  const daemon = await startDaemon('life-load', { log_level: 'info' });
  try {
    const volumes = ['a', 'b', 'c', 'd'];
    for (const name of volumes) {
      sparseFile(daemon.file(`${name}.img`), 16 * MiB);
      await daemon.ok(['attach', '-d', `${name}.img`, '--name', name]);
    }
    const waiter_id = (await daemon.ok(['snapshot_create', '-d', 'd', '-f', daemon.dir, '-l', '16M'])).trim();
    await daemon.ok(['snapshot_take', '-i', waiter_id]);
    let stop = false;
    const outcomes = { ok: 0, refused: 0 };
    const accepted = /ESHUTDOWN|ENOENT|EIO|ESRCH|ETIMEDOUT|EBUSY/;
    // CLI processes cycling snapshots on three volumes.
    const cli_loops = volumes.slice(0, 3).map(async (name) => {
      while (!stop) {
        const created = await daemon.cli(['snapshot_create', '-d', name, '-f', daemon.file(`${name}.diff`), '-l', '16M']);
        if (created.code !== 0) { assert.match(created.stderr, accepted); outcomes.refused += 1; break; }
        const id = created.stdout.trim();
        for (const args of [['snapshot_take', '-i', id], ['cbtinfo', '-d', name], ['snapshot_destroy', '-i', id]]) {
          const result = await daemon.cli(args);
          if (result.code === 0) outcomes.ok += 1;
          else { assert.match(result.stderr, accepted, result.stderr); outcomes.refused += 1; }
        }
      }
    });
    // Raw IPC clients: status in a loop, and long-polls.
    const ipc_loops = Array.from({ length: 20 }, async (_, index) => {
      let client: IpcClient;
      try {
        client = await IpcClient.connect(daemon.socket);
      } catch (error) {
        assert.match((error as Error).message, /no daemon|stopping/);
        return;
      }
      try {
        while (!stop) {
          if (index % 2 === 0) await client.call('snapshot_waitevent', { id: waiter_id, timeout_ms: 30_000 }, 40_000);
          else await client.call('status', {});
          outcomes.ok += 1;
        }
      } catch (error) {
        assert.match(`${(error as Error).message} (${(error as { code?: string }).code})`, accepted);
        outcomes.refused += 1;
      } finally {
        client.close();
      }
    });
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const exit = await daemon.stop('SIGTERM');
    stop = true;
    await Promise.all([...cli_loops, ...ipc_loops]);
    assert.equal(exit, { code: 0, signal: null }, daemon.logs.slice(-3000));
    assert.ok(outcomes.ok > 0 && outcomes.refused > 0, JSON.stringify(outcomes));
    console.log(`  under load: ${outcomes.ok} answered, ${outcomes.refused} refused or cut by the shutdown`);
    assert.equal(withSavedStateNamed(listing(daemon.dir)),
      ['a.img', 'b.img', 'c.img', 'd.img', ...Array(4).fill('state/cbt/*.cbt'), 'state/volumes.json'], 'no socket, pid, temp or storage file');
  } finally {
    await disposeDaemon(daemon);
  }
});

test('bad flags, params and config files: exit 2 with one line naming the problem', async () => {
  const dir = scratchDir('life-config');
  try {
    const base = ['daemon', '--socket', path.join(dir, 's.sock'), '--state-dir', path.join(dir, 'state')];
    const config = (name: string, text: string): string => {
      const file = path.join(dir, name);
      writeFileSync(file, text);
      return file;
    };
    const cases: [string[], RegExp][] = [
      [['--frobnicate'], /Unknown option '--frobnicate'/],
      [['--param', 'chunk_minimum_shift=99'], /chunk_minimum_shift must be an integer in \[9, 30\], got 99/],
      [['--param', 'no_such_param=1'], /unknown parameter 'no_such_param'/],
      [['--param', 'chunk_minimum_shift'], /--param expects NAME=INTEGER/],
      [['--log-level', 'loud'], /--log-level: expected one of fatal, error, warn, info, debug, trace, silent, got "loud"/],
      [['--nbd-listen', 'localhost'], /--nbd-listen: expected HOST:PORT/],
      [['--nbd-listen', 'localhost:70000'], /port must be in \[0, 65535\]/],
      [['--config', path.join(dir, 'missing.json')], /config file .*missing\.json does not exist \(ENOENT\)$/],
      [['--config', config('bad.json', '{ nope')], /bad\.json: not valid JSON/],
      [['--config', config('array.json', '[]')], /array\.json: must hold a JSON object/],
      [['--config', config('unknown.json', '{"sokcet": "/x"}')], /unknown\.json: config: unknown key "sokcet"/],
      [['--config', config('type.json', '{"log_level": 3}')], /type\.json: config\.log_level: expected a string/],
      [['--config', config('params.json', '{"params": {"chunk_maximum_in_queue": 0}}')], /params\.json: params: parameter chunk_maximum_in_queue must be an integer in \[1, 65536\], got 0/],
      [['--config', config('twice.json', '{"state-dir": "/a", "state_dir": "/b"}')], /twice\.json: state_dir is given twice/],
    ];
    for (const [args, message] of cases) {
      const result = await runNode(CLI_PATH, [...base, ...args]);
      assert.is(result.code, 2, `${args.join(' ')}: ${result.stderr}`);
      const lines = result.stderr.split('\n').filter(Boolean);
      assert.is(lines.length, 1, result.stderr);
      assert.match(lines[0] as string, /^ublksnap daemon: .* \((EINVAL|ENOENT)\)$/);
      assert.match(lines[0] as string, message);
    }
    assert.not.ok(exists(path.join(dir, 's.sock')));
  } finally {
    removeScratchDir(dir);
  }
});

test('a config file: relative paths from its directory, volumes attached at start, flags win', async () => {
  const dir = scratchDir('life-configfile');
  const daemon = new TestDaemon(dir);
  try {
    sparseFile(path.join(dir, 'disk.img'), 4 * MiB);
    writeFileSync(path.join(dir, 'ublksnap.json'), JSON.stringify({
      'state-dir': 'from-config-state',
      socket: 'from-config.sock',
      log_level: 'warn',
      params: { chunk_minimum_shift: 16 },
      volumes: [{ path: 'disk.img', name: 'disk' }],
    }));
    // TestDaemon passes --socket and --state-dir: they beat the file's.
    await daemon.start({ args: ['--config', path.join(dir, 'ublksnap.json')], log_level: 'info' });
    assert.not.ok(exists(path.join(dir, 'from-config.sock')));
    const status = JSON.parse(await daemon.ok(['status', '-j']));
    assert.equal(status.volumes.map((v: { name: string; path: string }) => [v.name, v.path]), [['disk', path.join(dir, 'disk.img')]]);
    assert.is(status.daemon.state_dir, daemon.state_dir);
  } finally {
    await disposeDaemon(daemon);
  }
});

test.run();
