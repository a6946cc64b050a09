import { execFileSync, spawn } from 'node:child_process';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { startupMarker } from '../ssh/startup-marker.js';
import {
  ClosedBeforeMarkerError,
  MAX_STARTUP_OUTPUT,
  StartupOutputError,
  skipStartupOutput,
  startupFileHint,
} from './startup-output.js';

/** Everything the stream delivers from now on, once it ends. */
function rest(stream: NodeJS.ReadableStream): Promise<string> {
  return new Promise((resolve) => {
    let out = '';
    stream.on('data', (d: Buffer) => {
      out += d.toString();
    });
    stream.once('end', () => resolve(out));
    stream.resume();
  });
}

describe('shell startup output', () => {
  it('prints a marker a shell produces exactly, without the marker appearing in the command', () => {
    const m = startupMarker();
    expect(m.print).not.toContain(m.bytes.toString().trim());
    expect(execFileSync('/bin/sh', ['-c', m.print])).toEqual(m.bytes);
    expect(startupMarker().bytes).not.toEqual(m.bytes);
  });

  it("drops a real shell's output before the marker and hands over the rest of the stream intact", async () => {
    const m = startupMarker();
    const child = spawn('/bin/sh', ['-c', `printf 'hello\\nno newline'; ${m.print}; printf payload-1; exec cat`]);
    const prefix = await skipStartupOutput(child.stdout, m.bytes, { timeoutMs: 10_000 });
    expect(prefix.toString()).toBe('hello\nno newline');
    const after = rest(child.stdout);
    child.stdin.end('payload-2');
    expect(await after).toBe('payload-1payload-2');
  });

  it('finds a marker split across chunks and keeps bytes that came with it', async () => {
    const m = startupMarker();
    const s = new PassThrough();
    const skipped = skipStartupOutput(s, m.bytes, { timeoutMs: 10_000 });
    s.write('noise');
    s.write(m.bytes.subarray(0, 5));
    s.write(Buffer.concat([m.bytes.subarray(5), Buffer.from('first')]));
    expect((await skipped).toString()).toBe('noise');
    s.write('second'); // arrives while paused: buffered, not lost
    const after = rest(s);
    s.end('third');
    expect(await after).toBe('firstsecondthird');
  });

  it('gives up after 64 KiB without the marker, quoting the output and naming the startup file', async () => {
    const s = new PassThrough();
    const skipped = skipStartupOutput(s, startupMarker().bytes, { timeoutMs: 10_000, shell: '/usr/bin/zsh' });
    s.write('welcome!\n');
    s.write('x'.repeat(MAX_STARTUP_OUTPUT + 100));
    const err = await skipped.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StartupOutputError);
    expect((err as Error).message).toMatch(
      /^the guest's shell printed output on startup \(more than 64 KiB before sshfs could start\), which would corrupt the SFTP stream: "welcome!\\nxxx+"\.\.\.; make ~\/\.zshenv in the guest/,
    );
  });

  it('reports a stream that closed before the marker, and one that never printed it', async () => {
    const closed = new PassThrough();
    const skipped = skipStartupOutput(closed, startupMarker().bytes, { timeoutMs: 10_000 });
    closed.write('mkdir: Permission denied?');
    closed.destroy();
    await expect(skipped).rejects.toBeInstanceOf(ClosedBeforeMarkerError);

    const silent = new PassThrough();
    await expect(skipStartupOutput(silent, startupMarker().bytes, { timeoutMs: 50 })).rejects.toThrow(
      /^the guest command did not start sshfs within 0\.05s$/,
    );
  });

  it("names the startup file of the guest user's shell", () => {
    expect(startupFileHint('/bin/bash')).toContain('~/.bashrc');
    expect(startupFileHint('/usr/bin/zsh')).toContain('~/.zshenv');
    expect(startupFileHint('/usr/bin/fish')).toContain('~/.config/fish/config.fish');
    expect(startupFileHint('/bin/ksh')).toMatch(/login shell \(\/bin\/ksh\).*~\/\.bashrc for bash/);
    expect(startupFileHint(null)).toMatch(/login shell print nothing/);
  });
});
