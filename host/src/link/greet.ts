// The first exchange with a guest agent on a new peer: its hello within a deadline, its info and its build, with the
// guest's text made inert (../inert-text.ts) before anything logs or shows it. Shared by the link and `doctor`; holds
// no state.
import { setTimeout as sleep } from 'node:timers/promises';
import { type Hello, type Info, type Peer, RemoteError } from '@tether/protocol';
import { guestText } from '../inert-text.js';

/** The socket took the connection, but no hello came in time. */
export class HelloTimeoutError extends Error {
  override name = 'HelloTimeoutError';
}

/**
 * The first exchange with the guest agent at `socket` on a new peer: its hello (within `timeoutMs`, else
 * HelloTimeoutError), its info and its build.
 */
export async function greet(
  peer: Peer,
  socket: string,
  timeoutMs: number,
): Promise<{ hello: Hello; info: Info; build: string | null }> {
  const hello = await Promise.race([
    peer.ready,
    sleep(timeoutMs, null, { ref: false }).then((): never => {
      throw new HelloTimeoutError(`no hello from ${socket} within ${timeoutMs} ms`);
    }),
  ]);
  const info = inertInfo(await peer.request('info', {}));
  const build = await agentBuild(peer);
  return { hello: { ...hello, agent: guestText(hello.agent) }, info, build: build && guestText(build) };
}

/** Info with its text made inert: it reaches the log, `status` and `up`'s lines. */
export function inertInfo(info: Info): Info {
  const { version, kernel, arch, hostname, caps, listenEvents } = info;
  return {
    ...info,
    version: guestText(version),
    kernel: guestText(kernel),
    arch: guestText(arch),
    hostname: guestText(hostname),
    caps: caps.map(guestText),
    ...(listenEvents ? { listenEvents: { ...listenEvents, detail: guestText(listenEvents.detail) } } : {}),
  };
}

/**
 * The agent's build hash, or null from an agent that does not say (older than the `agent.build` method: it answers
 * unknown_method; any refusal counts the same).
 */
async function agentBuild(peer: Peer): Promise<string | null> {
  try {
    return (await peer.request('agent.build', {})).build;
  } catch (err) {
    if (err instanceof RemoteError) return null;
    throw err;
  }
}
