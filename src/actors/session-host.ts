// The sessions an I/O actor hosts: frontend loops (a network connection, a
// kernel block queue) that run on this thread's event loop and submit through an
// ActorLocalQueue served at once by this actor (session-contract.ts). The
// host loads the frontend's module by the path the descriptor names and
// knows nothing else of it.

import { handleIsImage, handleVolume } from '../shared/request-record';
import { targetIsLive } from '../shared/volume-control';
import type { IoRegistry } from '../cow/registry';
import { ActorLocalQueue, type QueueHost } from './local-queue';
import type { ActorLogLevel, LogFields, RunningSession, SessionContext, SessionCounters, SessionDescriptor, SessionModule } from './session-contract';

export class SessionHost {
  private readonly sessions = new Map<number, RunningSession>();

  constructor(private readonly queue_host: QueueHost, private readonly registry: IoRegistry,
    private readonly log: (level: ActorLogLevel, fields: LogFields, message: string) => void) {}

  get count(): number {
    return this.sessions.size;
  }

  async host(descriptor: SessionDescriptor): Promise<SessionCounters> {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const module = require(descriptor.module) as Partial<SessionModule>;
    if (typeof module.runSession !== 'function') {
      throw new TypeError(`${descriptor.module} is not a session module: it exports no runSession`);
    }
    const registry = this.registry;
    const volume_index = handleVolume(descriptor.target_handle);
    const queue = new ActorLocalQueue(descriptor.session_id, descriptor.queue_depth, descriptor.max_io_bytes, this.queue_host);
    const context: SessionContext = {
      session_id: descriptor.session_id,
      target_handle: descriptor.target_handle,
      queue,
      isLive: () => targetIsLive(registry.volumes[volume_index]?.control, descriptor.target_handle),
      readSnapshotCbt: (first_block, target) => registry.volumes[volume_index]?.cbt.readSnapshot(first_block, target) ?? 0,
      directVolume: () => {
        const volume = registry.volumes[volume_index];
        if (volume === undefined || handleIsImage(descriptor.target_handle)) return null;
        const { fd, capacity_bytes, control, cbt, write_hold } = volume.descriptor;
        return { fd, capacity_bytes, control, cbt, ...(write_hold ? { write_hold } : {}) };
      },
      logger: { log: this.log },
    };
    let running: RunningSession;
    try {
      running = module.runSession(context, descriptor.payload);
    } catch (error) {
      await queue.close();
      throw error;
    }
    this.sessions.set(descriptor.session_id, running);
    try {
      return await running.finished;
    } finally {
      this.sessions.delete(descriptor.session_id);
      // Requests still parked at a gate complete first; then the tags are free.
      await queue.close();
    }
  }

  drain(session_id: number): void {
    this.sessions.get(session_id)?.drain();
  }

  close(session_id: number): void {
    this.sessions.get(session_id)?.close();
  }

  closeAll(): void {
    for (const session of this.sessions.values()) session.close();
  }
}
