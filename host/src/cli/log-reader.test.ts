// Reading rotated agent logs: last N lines across files, filters, and following current.log across a rotation.
import { appendFileSync, mkdtempSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { endedWithoutStop, follow, lastRun, logFiles, tail } from './log-reader.js';

const line = (n: number, component = 'forward', level = 30) => JSON.stringify({ level, component, msg: `m${n}` });

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tether-logs-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function point(file: string) {
  try {
    unlinkSync(join(dir, 'current.log'));
  } catch {}
  symlinkSync(file, join(dir, 'current.log'));
}

describe('log reader', () => {
  it('orders rotated files numerically and takes the last N matching lines across them', () => {
    writeFileSync(join(dir, 'tether.9.log'), `${line(1)}\n${line(2, 'ssh', 40)}\n`);
    writeFileSync(join(dir, 'tether.10.log'), `${line(3)}\n${line(4, 'ssh', 50)}\n{"partial":`);
    writeFileSync(join(dir, 'agent.stdio.log'), 'not a pino file\n');
    point('tether.10.log');
    expect(logFiles(dir).map((f) => f.slice(dir.length + 1))).toEqual(['tether.9.log', 'tether.10.log']);
    expect(tail(dir, {}, 3).lines.map((l) => JSON.parse(l).msg)).toEqual(['m2', 'm3', 'm4']);
    expect(tail(dir, { components: ['ssh'] }).lines.map((l) => JSON.parse(l).msg)).toEqual(['m2', 'm4']);
    expect(tail(dir, { minLevel: 50 }).lines.map((l) => JSON.parse(l).msg)).toEqual(['m4']);
    // Following starts after the last complete line of the current file.
    expect(tail(dir, {}, 1)).toMatchObject({
      file: join(dir, 'tether.10.log'),
      offset: `${line(3)}\n${line(4, 'ssh', 50)}\n`.length,
    });
    // Also when the directory is reached through a symlink (macOS's /var → /private/var).
    const via = `${dir}-link`;
    symlinkSync(dir, via);
    try {
      expect(tail(via, {}, 1).offset).toBe(`${line(3)}\n${line(4, 'ssh', 50)}\n`.length);
    } finally {
      unlinkSync(via);
    }
  });

  it('follows current.log across a rotation without losing or repeating lines', async () => {
    writeFileSync(join(dir, 'tether.1.log'), `${line(1)}\n`);
    point('tether.1.log');
    const seen: string[] = [];
    const stop = follow(dir, tail(dir, {}), {}, (l) => seen.push(JSON.parse(l).msg), 20);
    try {
      appendFileSync(join(dir, 'tether.1.log'), `${line(2)}\n${line(3).slice(0, 10)}`);
      await expect.poll(() => seen).toEqual(['m2']);
      appendFileSync(join(dir, 'tether.1.log'), `${line(3).slice(10)}\n`);
      writeFileSync(join(dir, 'tether.2.log'), `${line(4)}\n`);
      point('tether.2.log');
      await expect.poll(() => seen).toEqual(['m2', 'm3', 'm4']);
      appendFileSync(join(dir, 'tether.2.log'), `${line(5)}\n`);
      await expect.poll(() => seen).toEqual(['m2', 'm3', 'm4', 'm5']);
    } finally {
      stop();
    }
  });

  it("lists a stopped run's warnings and errors with the reason their lines carry in a field", () => {
    const rec = (level: number, component: string, msg: string, fields: object = {}) =>
      JSON.stringify({ level, time: '2025-01-01T00:00:00.000Z', component, msg, ...fields });
    writeFileSync(
      join(dir, 'tether.1.log'),
      `${[
        rec(30, 'agent', 'host agent for dev starting'),
        rec(50, 'mount', 'mount error', { mountPoint: '/home/me', error: 'sshfs exited with status 1' }),
        rec(40, 'watch', 'watch error', { err: { type: 'Error', message: 'ENOSPC' } }),
      ].join('\n')}\n`,
    );
    point('tether.1.log');
    expect(lastRun(dir, 'dev').errors.map((e) => `[${e.component}] ${e.msg}`)).toEqual([
      '[mount] mount error: sshfs exited with status 1',
      '[watch] watch error: ENOSPC',
    ]);
    expect(lastRun(dir, 'dev').guestSocket).toBeNull();
    // No `stopped` line: killed or crashed, and where a crash's stack went.
    expect(lastRun(dir, 'dev').stopReason).toBe(
      `its log ends without a stop: the agent was killed (SIGKILL) or crashed (a crash's stack is in ${join(dir, 'agent.stdio.log')})`,
    );
  });

  it("names a crash's fatal line from the agent's own output, after the stack V8 prints", () => {
    const stdio = join(dir, 'agent.stdio.log');
    writeFileSync(
      stdio,
      [
        '(node:12) Warning: something harmless',
        '<--- Last few GCs --->',
        'FATAL ERROR: Ineffective mark-compacts near heap limit Allocation failed - JavaScript heap out of memory',
        '----- Native stack trace -----',
        ' 1: 0xb8c2e0 node::OOMErrorHandler(char const*, v8::OOMDetails const&) [node]',
        ' 2: 0xf0a5f0 v8::Utils::ReportOOMFailure(v8::internal::Isolate*, char const*, v8::OOMDetails const&) [node]',
        '',
      ].join('\n'),
    );
    expect(endedWithoutStop(dir)).toBe(
      `the agent crashed: FATAL ERROR: Ineffective mark-compacts near heap limit Allocation failed - JavaScript heap out of memory (see ${stdio})`,
    );
    writeFileSync(stdio, '(node:12) Warning: something harmless\n');
    expect(endedWithoutStop(dir)).toMatch(/^the agent was killed \(SIGKILL\) or crashed/);
  });

  it('tells the guest agent socket a stopped run moved to', () => {
    const rec = (msg: string, fields: object = {}) =>
      JSON.stringify({ level: 30, time: '2025-01-01T00:00:00.000Z', component: 'link', msg, ...fields });
    writeFileSync(
      join(dir, 'tether.1.log'),
      `${[
        rec('host agent for dev starting'),
        rec('guest agent socket is /home/me/.tether-guest/agent.sock', {
          socket: '/home/me/.tether-guest/agent.sock',
          was: '/run/tether/agent.sock',
        }),
      ].join('\n')}\n`,
    );
    point('tether.1.log');
    expect(lastRun(dir, 'dev').guestSocket).toBe('/home/me/.tether-guest/agent.sock');
  });

  it('marks the problems of a stopped run that a later line shows resolved, and only those', () => {
    const rec = (level: number, time: string, component: string, msg: string, fields: object = {}) =>
      JSON.stringify({ level, time: `2025-01-01T00:00:0${time}.000Z`, component, msg, ...fields });
    const fwd = 'tcp:127.0.0.1:8080';
    writeFileSync(
      join(dir, 'tether.1.log'),
      `${[
        rec(30, '0', 'agent', 'host agent for dev starting'),
        rec(50, '1', 'mount', 'mount /a error: EIO', { mountPoint: '/a', state: 'error' }),
        rec(50, '1', 'mount', 'mount /b error: EIO', { mountPoint: '/b', state: 'error' }),
        rec(40, '2', 'forward', 'conflict', { forward: fwd, state: 'conflict' }),
        rec(40, '2', 'sftp', 'bad packet', { mountPoint: '/a' }),
        rec(30, '3', 'mount', 'mount /a mounted', { mountPoint: '/a', state: 'mounted' }),
        rec(30, '4', 'forward', 'forwarding', { forward: 'tcp:127.0.0.1:9090', state: 'forwarding' }),
        rec(30, '5', 'forward', 'forwarding', { forward: fwd, state: 'forwarding' }),
      ].join('\n')}\n`,
    );
    point('tether.1.log');
    expect(lastRun(dir, 'dev').errors.map((e) => `${e.msg} ${e.resolvedAt}`)).toEqual([
      'mount /a error: EIO 2025-01-01T00:00:03.000Z',
      'mount /b error: EIO null',
      'conflict 2025-01-01T00:00:05.000Z',
      'bad packet null', // an event of the SFTP server, not a state: no line settles it
    ]);
  });
});
