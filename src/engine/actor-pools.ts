// Starting, addressing and stopping the engine's actors:
//
//   cow-read  ×N   long-lived workers serving the volume request ring
//   image-io  ×M   long-lived workers serving the image request ring
//   store          piscina pool: store-queue flush tasks
//   grow           piscina pool of one thread: fallocate steps
//
// Control calls to the long-lived workers go through comlink; their rare
// notices (flush needed, snapshot corrupted) arrive as plain messages
// beside comlink's, recognised by their `ublksnap_notice` key.

import path from 'node:path';
import { Worker } from 'node:worker_threads';
import * as Comlink from 'comlink';
import nodeEndpoint from 'comlink/dist/umd/node-adapter';
import Piscina from 'piscina';
import type { Logger } from 'pino';
import { assert } from '../shared/assert';
import { REQUEST_RING_CAPACITY } from '../shared/limits';
import { REQUEST_WORDS } from '../shared/request-record';
import type { SessionCounters, SessionDescriptor } from '../actors/session-contract';
import { Ring } from '../shared/ring';
import type {
  ActorNotice, ActorStats, GrowResult, GrowTask, IoActorControl, StoreResult, StoreTask, WarmResult, WarmTask,
} from '../actors/messages';

/** A worker that does not answer a control call within this is broken. */
export const CONTROL_CALL_TIMEOUT_MS = 10_000;
/**
 * A worker's boot (a Node isolate loading the actor's modules) is not a
 * control call: under emulation and load it took over 15 s (a TCG guest,
 * four I/O actors starting at once), which a first attach right after
 * start — a config volume, a volume re-attached at restart — then paid
 * inside its 10 s.
 */
export const ACTOR_START_TIMEOUT_MS = 120_000;

interface IoActor {
  kind: 'cow' | 'image';
  worker: Worker;
  control: Comlink.Remote<IoActorControl>;
  /** Frontend sessions it serves now: a new one goes to the least busy actor of its kind. */
  sessions: number;
}

/** A session as the pools know it: where it runs, and how to reach it. */
export interface SessionPlacement {
  finished: Promise<SessionCounters>;
  drain(): void;
  close(): void;
}

export class ActorPools {
  readonly cow_ring = Ring.create(REQUEST_RING_CAPACITY, REQUEST_WORDS);
  readonly image_ring = Ring.create(REQUEST_RING_CAPACITY, REQUEST_WORDS);
  private readonly io_actors: IoActor[] = [];
  private readonly store_pool: Piscina;
  private readonly grow_pool: Piscina;
  private readonly warm_pool: Piscina;
  private stopping = false;

  constructor(counts: { cow: number; image: number; store: number },
    private readonly onNotice: (notice: ActorNotice) => void, private readonly logger: Logger) {
    for (let i = 0; i < counts.cow; i += 1) this.io_actors.push(this.startIoActor('cow', 'cow-read.js', this.cow_ring));
    for (let i = 0; i < counts.image; i += 1) this.io_actors.push(this.startIoActor('image', 'image-io.js', this.image_ring));
    this.store_pool = new Piscina({ filename: actorFile('store.js'), minThreads: counts.store, maxThreads: counts.store });
    this.grow_pool = new Piscina({ filename: actorFile('grow.js'), minThreads: 1, maxThreads: 1 });
    this.warm_pool = new Piscina({ filename: actorFile('warm.js'), minThreads: 1, maxThreads: 1 });
  }

  get counts(): { cow: number; image: number; store: number } {
    return {
      cow: this.io_actors.filter((a) => a.kind === 'cow').length,
      image: this.io_actors.filter((a) => a.kind === 'image').length,
      store: this.store_pool.threads.length,
    };
  }

  /** Resolves once every I/O actor answers (its modules loaded), within ACTOR_START_TIMEOUT_MS. */
  async started(): Promise<void> {
    await Promise.all(this.io_actors.map((actor) => withTimeout(actor.control.stats(), `${actor.kind} actor start`, ACTOR_START_TIMEOUT_MS)));
  }

  /** Runs one control call on every I/O actor and waits for all of them. */
  async broadcast(call: (control: Comlink.Remote<IoActorControl>) => Promise<unknown>): Promise<void> {
    await Promise.all(this.io_actors.map((actor) => withTimeout(call(actor.control), `${actor.kind} actor control call`)));
  }

  /** Per-actor counters (requests served, parked, GCs). */
  async stats(): Promise<(ActorStats & { kind: 'cow' | 'image' })[]> {
    return Promise.all(this.io_actors.map(async (actor) => ({ kind: actor.kind, ...(await withTimeout(actor.control.stats(), 'actor stats')) })));
  }

  /** Starts a frontend session on the actor of `kind` that serves the fewest. */
  hostSession(kind: 'cow' | 'image', session: SessionDescriptor): SessionPlacement {
    let actor: IoActor | undefined;
    for (const candidate of this.io_actors) {
      if (candidate.kind === kind && (actor === undefined || candidate.sessions < actor.sessions)) actor = candidate;
    }
    assert(actor !== undefined, `no ${kind} actor to host a session`);
    const host = actor;
    host.sessions += 1;
    const finished = host.control.hostSession(session);
    void finished.finally(() => { host.sessions -= 1; }).catch(() => undefined);
    return {
      finished,
      drain: () => { void host.control.drainSession(session.session_id).catch(() => undefined); },
      close: () => { void host.control.closeSession(session.session_id).catch(() => undefined); },
    };
  }

  /** Wakes the actors so they retry requests parked at a frozen gate. */
  wakeAll(): void {
    this.cow_ring.wakeAll();
    this.image_ring.wakeAll();
  }

  store(task: StoreTask): Promise<StoreResult> {
    return this.store_pool.run(task) as Promise<StoreResult>;
  }

  grow(task: GrowTask): Promise<GrowResult> {
    return this.grow_pool.run(task) as Promise<GrowResult>;
  }

  warm(task: WarmTask): Promise<WarmResult> {
    return this.warm_pool.run(task) as Promise<WarmResult>;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.allSettled(this.io_actors.map((actor) => withTimeout(actor.control.stop(), 'actor stop')));
    for (const actor of this.io_actors) actor.control[Comlink.releaseProxy]();
    await Promise.all(this.io_actors.map((actor) => actor.worker.terminate()));
    await Promise.all([this.store_pool.destroy(), this.grow_pool.destroy(), this.warm_pool.destroy()]);
  }

  private startIoActor(kind: 'cow' | 'image', file: string, ring: Ring): IoActor {
    const worker = new Worker(actorFile(file), { workerData: { ring: ring.buffer } });
    worker.on('message', (message: { ublksnap_notice?: ActorNotice }) => {
      // Comlink's replies share this channel; notices carry their own key.
      if (message && typeof message === 'object' && message.ublksnap_notice) this.onNotice(message.ublksnap_notice);
    });
    worker.on('error', (error) => this.logger.fatal({ err: error, actor: kind }, 'I/O actor crashed'));
    worker.on('exit', (code) => {
      if (!this.stopping) this.logger.fatal({ actor: kind, code }, 'I/O actor exited unexpectedly');
    });
    return { kind, worker, control: Comlink.wrap<IoActorControl>(nodeEndpoint(worker)), sessions: 0 };
  }
}

function actorFile(name: string): string {
  return path.join(__dirname, '..', 'actors', name);
}

function withTimeout<T>(promise: Promise<T>, what: string, timeout_ms = CONTROL_CALL_TIMEOUT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${timeout_ms} ms`)), timeout_ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
