// An instance or agent of another user (`sudo tether up` on a user's instance, a TETHER_HOME of root's), met by the
// CLI run as an ordinary user: each command names whose it is and to run tether as that user, instead of taking it
// for no instance or a dead agent, and `rm --force` leaves a live agent of root's and its directory alone.
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliBuilt, runCliWith } from './helpers/cli-helpers.js';

const NOBODY = 65534;
const isRoot = process.getuid?.() === 0;
if (!isRoot && process.env.CI === 'true') throw new Error('the other-user tests need root under CI');
if (!isRoot) console.warn('skipping other-user tests: they need root (to act as root and as nobody)');

describe.skipIf(!isRoot || !cliBuilt())("the CLI as an ordinary user, on another user's instance", () => {
  const home = mkdtempSync(join(tmpdir(), 'tether-other-user-'));
  const tetherHome = join(home, '.tether');
  const config = 'ssh:\n  host: 127.0.0.1\n  port: 2222\n  user: u\n';
  let agent: net.Server;

  const asNobody = (...args: string[]) => runCliWith(tetherHome, args, { asUid: NOBODY, env: { HOME: home } });

  beforeAll(async () => {
    chmodSync(home, 0o755);
    mkdirSync(tetherHome, { mode: 0o755 });
    chownSync(tetherHome, NOBODY, NOBODY);
    // Nobody's own instance, whose agent root started: its ha.pid and ha.sock are root's, 0600.
    const mine = join(tetherHome, 'mine');
    mkdirSync(mine, { mode: 0o700 });
    chownSync(mine, NOBODY, NOBODY);
    writeFileSync(join(mine, 'tether.yaml'), config, { mode: 0o600 });
    chownSync(join(mine, 'tether.yaml'), NOBODY, NOBODY);
    writeFileSync(join(mine, 'ha.pid'), `${process.pid}\n`, { mode: 0o600 });
    agent = net.createServer((s) => s.destroy());
    await new Promise<void>((resolve) => agent.listen(join(mine, 'ha.sock'), resolve));
    chmodSync(join(mine, 'ha.sock'), 0o600);
    // An instance root made, in a directory only root may enter.
    mkdirSync(join(tetherHome, 'theirs'), { mode: 0o700 });
    writeFileSync(join(tetherHome, 'theirs', 'tether.yaml'), config, { mode: 0o600 });
  });

  afterAll(() => {
    agent?.close();
    rmSync(home, { recursive: true, force: true });
  });

  it("names root as the owner of the agent, and rm --force leaves root's live agent alone", async () => {
    const status = await asNobody('status', 'mine');
    expect(status.code).toBe(1);
    expect(status.stderr).toContain(
      `the agent on ${tetherHome}/mine/ha.sock cannot be asked: ${tetherHome}/mine/ha.sock is root's and this user may not use it: run tether as root (sudo)`,
    );
    expect((await asNobody('down', 'mine')).stderr).toContain('run tether as root (sudo)');

    const rm = await asNobody('rm', '--force', 'mine');
    expect(rm.code).toBe(1);
    expect(rm.stderr).toContain(
      `instance mine has an agent of another user, or its files: ${tetherHome}/mine/ha.pid is root's and this user may not use it: run tether as root (sudo) to stop it (tether down mine), then tether rm mine`,
    );
    expect(existsSync(join(tetherHome, 'mine', 'ha.sock'))).toBe(true);
    expect(agent.listening).toBe(true);

    const doctor = await asNobody('doctor', 'mine');
    expect(doctor.stdout).toMatch(/^✗ host agent: the agent on \S+ cannot be asked: .* is root's/m);
    expect(doctor.stdout).toContain('    fix: as root: tether doctor mine');
  });

  it('names root as the owner of an instance directory it may not enter, for every command and in ls', async () => {
    const denied = `instance theirs: ${tetherHome}/theirs is root's and this user may not use it: run tether as root (sudo), or use a TETHER_HOME of your own`;
    for (const args of [
      ['status', 'theirs'],
      ['down', 'theirs'],
      ['forward', 'ls', 'theirs'],
      ['rm', '--force', 'theirs'],
    ]) {
      const r = await asNobody(...args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr, args.join(' ')).toContain(denied);
    }
    expect(existsSync(join(tetherHome, 'theirs', 'tether.yaml'))).toBe(true);

    const ls = await asNobody('ls', '--json');
    expect(ls.code).toBe(0);
    expect(JSON.parse(ls.stdout)).toContainEqual(
      expect.objectContaining({
        name: 'theirs',
        state: 'not readable',
        error: `${tetherHome}/theirs is root's and this user may not use it: run tether as root (sudo)`,
      }),
    );
  });
});
