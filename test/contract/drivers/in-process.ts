// The in-process frontend: an IoClient (its own queue, src/frontends/in-process)
// per opened target, requests through the engine's request rings. No
// socket, no session: the shortest path to the engine, and the baseline
// every other driver must match.

import { IoClient } from '../../../src/frontends/in-process/io-client';
import { clientTarget, type BlockTarget } from '../../lib/block-target';
import type { DriverFactory, FrontendDriver } from './driver';

/** Requests in flight per target, and the largest request (bigger ones are split by IoClient). */
const QUEUE_DEPTH = 32;
const MAX_IO_BYTES = 1 << 20;

export const inProcessDriver: DriverFactory = {
  name: 'in-process',
  unavailable: () => null,
  async start(engine): Promise<FrontendDriver> {
    const clients = new Set<IoClient>();
    return {
      name: 'in-process',
      async open(export_name: string): Promise<BlockTarget> {
        const resolved = engine.resolveExport(export_name);
        const client = await IoClient.open(engine, QUEUE_DEPTH, MAX_IO_BYTES);
        clients.add(client);
        const target = clientTarget(client, resolved.handle, export_name, resolved.size_bytes);
        return {
          ...target,
          async close(): Promise<void> {
            if (!clients.delete(client)) return;
            await client.close();
          },
        };
      },
      async close(): Promise<void> {
        for (const client of [...clients]) {
          clients.delete(client);
          await client.close();
        }
      },
    };
  },
};
