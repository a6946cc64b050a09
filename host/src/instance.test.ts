// The pid file as the instance's claim: one agent wins, a live owner is named, a dead one's file (or a recycled
// pid's) is taken over.
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { claimPidFile, ensureInstanceDir, instancePaths, isAlive } from './instance.js';

describe('claimPidFile', () => {
  const home = mkdtempSync(join(tmpdir(), 'tether-instance-'));
  afterAll(() => rmSync(home, { recursive: true, force: true }));
  const paths = instancePaths('claim', home);
  ensureInstanceDir(paths);

  it('claims a free instance, names a live owner, and takes over the file of a dead one', async () => {
    expect(claimPidFile(paths)).toBeNull();
    expect(readFileSync(paths.pidFile, 'utf8')).toBe(`${process.pid}\n`);
    expect(claimPidFile(paths)).toBeNull(); // our own claim again

    // A live agent of this instance, as `ps` shows it (its command line names agent-main.js and the instance).
    const agent = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', 'agent-main.js', 'claim']);
    await once(agent, 'spawn');
    // A live process whose pid was recycled after the recorded agent died: no owner.
    const other = spawn('sleep', ['30']);
    await once(other, 'spawn');
    try {
      writeFileSync(paths.pidFile, `${agent.pid}\n`);
      expect(claimPidFile(paths)).toBe(agent.pid);
      expect(readFileSync(paths.pidFile, 'utf8')).toBe(`${agent.pid}\n`);

      writeFileSync(paths.pidFile, `${other.pid}\n`);
      expect(claimPidFile(paths)).toBeNull();
      expect(readFileSync(paths.pidFile, 'utf8')).toBe(`${process.pid}\n`);
    } finally {
      agent.kill();
      other.kill();
    }

    const dead = spawnSync(process.execPath, ['-e', '0']).pid as number;
    writeFileSync(paths.pidFile, `${dead}\n`);
    expect(claimPidFile(paths)).toBeNull();
    expect(readFileSync(paths.pidFile, 'utf8')).toBe(`${process.pid}\n`);
  });
});

describe.skipIf(process.platform !== 'linux')('isAlive', () => {
  it('counts an exited process its parent has not reaped yet as gone', async () => {
    // The background sleep outlives the shell, whose process becomes `sleep 30`: it never waits for children.
    const parent = spawn('sh', ['-c', 'sleep 0.3 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      const [line] = await once(parent.stdout!, 'data');
      const zombie = Number(String(line).trim());
      await expect.poll(() => readFileSync(`/proc/${zombie}/stat`, 'utf8').split(') ')[1]?.[0]).toBe('Z');
      expect(isAlive(zombie)).toBe(false);
      expect(isAlive(parent.pid!)).toBe(true);
    } finally {
      parent.kill();
    }
  });
});
