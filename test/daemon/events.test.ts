// Goal: the event hub delivers every snapshot event exactly once, in order,
// to the oldest waiter (the last one, 'destroyed', to every waiter), keeps
// events for a client that is not waiting, and a waiter whose client left
// costs nothing and takes no event with it. A filtered waiter (upstream's
// codes only) is passed by the events it does not accept: they go to a
// waiter that accepts them, or it discards them from the queue; at the end
// it gets ESRCH, as a waiter that comes after the end does.
// Method: an EventHub over a scripted waitEvent (a test double of the one
// engine method it uses); waits with timeouts and abort signals.

import pino from 'pino';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { SnapshotEvent } from '../../src/engine/api';
import { EventHub } from '../../src/daemon/events';
import { UblksnapError } from '../../src/shared/errors';

const ID = '5f0c3a1e-8d2b-4c6f-9a7e-0b1c2d3e4f50';

/** The engine side: events pushed by the test, waits answered like the engine's queue. */
class ScriptedEvents {
  private readonly queue: SnapshotEvent[] = [];
  private waiting: ((event: SnapshotEvent | null) => void) | null = null;
  private gone = false;
  waits = 0;

  push(code: SnapshotEvent['code']): void {
    const event: SnapshotEvent = { code, time: Date.now() };
    if (this.waiting) {
      const resolve = this.waiting;
      this.waiting = null;
      resolve(event);
    } else {
      this.queue.push(event);
    }
    if (code === 'destroyed') this.gone = true;
  }

  waitEvent = (id: string, timeout_ms: number): Promise<SnapshotEvent | null> => {
    this.waits += 1;
    if (id !== ID) return Promise.reject(new UblksnapError('ESRCH', `unknown snapshot ${id}`));
    const next = this.queue.shift();
    if (next) return Promise.resolve(next);
    if (this.gone) return Promise.reject(new UblksnapError('ESRCH', `unknown snapshot ${id}`));
    return new Promise((resolve) => {
      this.waiting = resolve;
      setTimeout(() => { if (this.waiting === resolve) { this.waiting = null; resolve(null); } }, timeout_ms);
    });
  };
}

function setup(): { engine: ScriptedEvents; hub: EventHub } {
  const engine = new ScriptedEvents();
  return { engine, hub: new EventHub(engine, pino({ level: 'silent' })) };
}

const never = new AbortController().signal;
const tick = (ms = 10): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

test('events go to the oldest waiter, one each, in order', async () => {
  const { engine, hub } = setup();
  const first = hub.wait(ID, 5_000, never);
  const second = hub.wait(ID, 5_000, never);
  await tick();
  engine.push('low_space');
  engine.push('grown');
  assert.is((await first)?.code, 'low_space');
  assert.is((await second)?.code, 'grown');
  await hub.stop();
});

test('events with no waiter are kept; a timeout is null', async () => {
  const { engine, hub } = setup();
  assert.is(await hub.wait(ID, 20, never), null);
  engine.push('no_space');
  engine.push('corrupted');
  await tick();
  assert.is((await hub.wait(ID, 0, never))?.code, 'no_space');
  assert.is((await hub.wait(ID, 0, never))?.code, 'corrupted');
  assert.is(await hub.wait(ID, 0, never), null);
  await hub.stop();
});

test('a waiter whose client left is removed at once and takes no event', async () => {
  const { engine, hub } = setup();
  const controllers = Array.from({ length: 100 }, () => new AbortController());
  const left = controllers.map((controller) => hub.wait(ID, 60_000, controller.signal).catch((error: UblksnapError) => error.code));
  await tick();
  assert.is(hub.waiter_count, 100);
  for (const controller of controllers) controller.abort('closed');
  assert.equal(new Set(await Promise.all(left)), new Set(['ETIMEDOUT']));
  assert.is(hub.waiter_count, 0, 'no waiter record left behind');
  engine.push('corrupted');
  await tick();
  assert.is((await hub.wait(ID, 0, never))?.code, 'corrupted', 'the event waited for the next client');
  await hub.stop();
});

test('destroyed reaches every waiter, then the snapshot is unknown (ESRCH)', async () => {
  const { engine, hub } = setup();
  const waits = [hub.wait(ID, 5_000, never), hub.wait(ID, 5_000, never), hub.wait(ID, 5_000, never)];
  await tick();
  engine.push('destroyed');
  assert.equal((await Promise.all(waits)).map((event) => event?.code), ['destroyed', 'destroyed', 'destroyed']);
  await hub.wait(ID, 0, never).then(() => assert.unreachable('ESRCH expected'), (error: UblksnapError) => assert.is(error.code, 'ESRCH'));
  await hub.wait('00000000-0000-4000-8000-000000000000', 0, never).then(
    () => assert.unreachable('ESRCH expected'), (error: UblksnapError) => assert.is(error.code, 'ESRCH'));
  await hub.stop();
});

test('destroyed with nobody waiting is kept for the next waiter', async () => {
  const { engine, hub } = setup();
  assert.is(await hub.wait(ID, 0, never), null);
  engine.push('corrupted');
  engine.push('destroyed');
  await tick();
  assert.is((await hub.wait(ID, 0, never))?.code, 'corrupted');
  assert.is((await hub.wait(ID, 0, never))?.code, 'destroyed');
  await hub.wait(ID, 0, never).then(() => assert.unreachable('ESRCH expected'), (error: UblksnapError) => assert.is(error.code, 'ESRCH'));
  await hub.stop();
});

const upstream = (code: string): boolean => code === 'no_space' || code === 'corrupted';

test('a filtered waiter is passed by what it does not accept; an unfiltered one behind it gets those', async () => {
  const { engine, hub } = setup();
  const filtered = hub.wait(ID, 5_000, never, upstream);
  const all = hub.wait(ID, 5_000, never);
  await tick();
  engine.push('low_space');
  engine.push('corrupted');
  assert.is((await all)?.code, 'low_space', 'the older waiter did not want it');
  assert.is((await filtered)?.code, 'corrupted');
  await hub.stop();
});

test('a filtered waiter discards queued events it does not accept, and times out when nothing else comes', async () => {
  const { engine, hub } = setup();
  assert.is(await hub.wait(ID, 20, never), null);
  engine.push('low_space');
  engine.push('grown');
  await tick(50);
  assert.is(await hub.wait(ID, 50, never, upstream), null);
  // They were consumed: an unfiltered waiter after it finds nothing either.
  assert.is(await hub.wait(ID, 50, never), null);
  engine.push('no_space');
  assert.is((await hub.wait(ID, 1_000, never, upstream))?.code, 'no_space');
  await hub.stop();
});

test('destroyed: a filtered waiter gets ESRCH, an unfiltered one the event', async () => {
  const { engine, hub } = setup();
  const filtered = hub.wait(ID, 5_000, never, upstream);
  const all = hub.wait(ID, 5_000, never);
  await tick();
  engine.push('destroyed');
  assert.is((await all)?.code, 'destroyed');
  await filtered.then(
    () => assert.unreachable('a filtered waiter must not see destroyed'),
    (error: UblksnapError) => assert.is(error.code, 'ESRCH'),
  );
  await hub.stop();
});

test('stop answers waiters with ESHUTDOWN and refuses new waits', async () => {
  const { hub } = setup();
  const waiting = hub.wait(ID, 60_000, never).then(() => 'answered', (error: UblksnapError) => error.code);
  await tick();
  await hub.stop();
  assert.is(await waiting, 'ESHUTDOWN');
  await hub.wait(ID, 0, never).then(() => assert.unreachable('ESHUTDOWN expected'), (error: UblksnapError) => assert.is(error.code, 'ESHUTDOWN'));
});

test.run();
