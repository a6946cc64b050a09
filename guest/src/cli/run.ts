// `tether-guest run`: the agent in the foreground until SIGTERM/SIGINT, then a clean shutdown (socket unlinked).
import { AgentServer } from '../agent/server.js';
import { systemStopping } from '../agent/system-state.js';
import type { Logger } from '../log.js';
import { BUILD_HASH, VERSION } from '../version.js';

interface RunOptions {
  socket?: string;
  socketOwner?: string;
  /** false: find listeners by polling alone, without the kernel's listen events. */
  listenEvents?: boolean;
}

export async function runAgent(options: RunOptions, log: Logger): Promise<void> {
  const server = new AgentServer({
    socketPath: options.socket,
    socketOwner: options.socketOwner,
    listenEvents: options.listenEvents,
    log,
  });
  await server.start();
  log.info({ version: VERSION, build: BUILD_HASH, pid: process.pid }, 'tether-guest started');
  await new Promise<void>((resolve) => {
    const stop = async (signal: NodeJS.Signals) => {
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      const stopping = await systemStopping();
      log.info({ signal, systemStopping: stopping }, 'shutting down');
      const reason = stopping ? `the guest is shutting down (${signal})` : `got ${signal}`;
      server.close({ reason, systemStopping: stopping }).then(resolve, resolve);
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
}
