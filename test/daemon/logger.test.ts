// Goal: on a terminal the daemon's log lines are short and human (time,
// level, message, key=value fields, a stack for errors); elsewhere they are
// pino's JSON, one object per line.
// Method: formatLogLine on pino records; a pino logger over
// PrettyDestination writing into a collecting stream.

import { Writable } from 'node:stream';
import pino from 'pino';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { PrettyDestination, formatLogLine } from '../../src/daemon/logger';

test('one human line: time, level, message, fields; pid and hostname hidden', () => {
  const time = new Date(2024, 1, 9, 14, 2, 7, 311).getTime();
  const line = formatLogLine(JSON.stringify({ level: 30, time, pid: 42, hostname: 'h', msg: 'snapshot taken', snapshot: 'abc', took_ms: 3, volumes: ['a', 'b'], path: '/x y' }), false);
  assert.is(line, '14:02:07.311 INFO  snapshot taken  snapshot=abc took_ms=3 volumes=["a","b"] path="/x y"\n');
  assert.match(formatLogLine(JSON.stringify({ level: 50, time, msg: 'boom' }), true), /\u001b\[31mERROR\u001b\[0m boom/);
  assert.is(formatLogLine('not json', false), 'not json\n');
});

test('errors show their message, code and stack', () => {
  const chunks: string[] = [];
  const output = new Writable({ write(chunk, _encoding, done) { chunks.push(chunk.toString()); done(); } });
  const logger = pino({ level: 'info' }, new PrettyDestination(output as unknown as NodeJS.WritableStream, false));
  const error = Object.assign(new Error('disk on fire'), { code: 'EIO' });
  logger.error({ err: error, step: 'engine' }, 'shutdown step failed');
  const text = chunks.join('');
  assert.match(text, /^\d\d:\d\d:\d\d\.\d{3} ERROR shutdown step failed {2}err="disk on fire" code=EIO step=engine\n {4}at /);
});

test.run();
