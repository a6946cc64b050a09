// execText's deadline covers the channel open: a frozen VM never answers it, and `tether down` must not wait for
// the keepalives to notice.
import type { Client, ClientChannel } from 'ssh2';
import { describe, expect, it } from 'vitest';
import { describeExit, execOn } from './exec.js';
import { commandLabel } from './shell-quote.js';

describe('execOn', () => {
  it('times out when the exec channel is never confirmed, and closes a channel that opens late', async () => {
    let answer: ((err: Error | undefined, channel: ClientChannel) => void) | undefined;
    const client = {
      exec: (_cmd: string, _opts: unknown, cb: typeof answer) => {
        answer = cb;
      },
    } as unknown as Client;
    await expect(execOn(client, 'umount /x', 100)).rejects.toThrow('guest command timed out after 100ms: umount /x');
    let closed = false;
    answer?.(undefined, {
      on: () => undefined,
      close: () => {
        closed = true;
      },
    } as unknown as ClientChannel);
    await expect.poll(() => closed).toBe(true);
  });

  it('names a timed-out script by its first line, not the whole script', async () => {
    const client = { exec: () => {} } as unknown as Client;
    const script = "printf '%s\\n' marker\nexec sshfs -o slave :/home/me /mnt";
    await expect(execOn(client, script, 50)).rejects.toMatchObject({
      name: 'GuestCommandTimeoutError',
      timeoutMs: 50,
      message: "guest command timed out after 50ms: printf '%s\\n' marker …",
    });
  });

  it('says how a command ended', () => {
    expect(describeExit({ code: 2, signal: null })).toBe('exit 2');
    expect(describeExit({ code: null, signal: 'KILL' })).toBe('killed by signal KILL');
    expect(describeExit({ code: null, signal: null })).toBe('no exit status');
  });
});

describe('commandLabel', () => {
  it('skips blank lines and a bare echo, and says when more follows', () => {
    expect(commandLabel('echo\nD=.tether-guest; case "$D" in\nesac')).toBe('D=.tether-guest; case "$D" in …');
    expect(commandLabel('  \nuname -m\n')).toBe('uname -m');
    expect(commandLabel('uname -m\nuname -r')).toBe('uname -m …');
    expect(commandLabel('uname -m')).toBe('uname -m');
    expect(commandLabel(`true ${'x'.repeat(100)}`)).toBe(`true ${'x'.repeat(75)} …`);
  });
});
