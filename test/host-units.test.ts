// The systemd user unit in scripts/host-units/ finds `tether` where a user without root links it (`npm link -w host`
// with npm's prefix in ~/.local, README): the user manager starts ExecStart with no login shell's PATH, only systemd's
// own and the unit's Environment=. Runs the unit's ExecStart command as systemd would resolve it, with %h and %i
// expanded, against the built CLI.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { cliBuilt } from './helpers/cli-helpers.js';

const UNIT = fileURLToPath(new URL('../scripts/host-units/tether@.service', import.meta.url));
const TETHER_BIN = fileURLToPath(new URL('../host/bin/tether.js', import.meta.url));
/** The PATH systemd's user manager gives a service that sets none (systemd's compiled-in default). */
const SYSTEMD_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin';

/** The unit's environment: systemd's PATH, then each Environment=NAME=VALUE, with %h expanded. */
function unitEnv(unit: string, home: string): Record<string, string> {
  const env: Record<string, string> = { PATH: SYSTEMD_PATH, HOME: home };
  for (const m of unit.matchAll(/^Environment=(\w+)=(.*)$/gm)) env[m[1]!] = m[2]!.replaceAll('%h', home);
  return env;
}

describe.skipIf(!cliBuilt())('systemd user unit for the host agent', () => {
  const home = mkdtempSync(join(tmpdir(), 'tether-host-units-'));
  afterAll(() => rmSync(home, { recursive: true, force: true }));

  it('runs the tether in ~/.local/bin that npm link put there for a user without root', () => {
    mkdirSync(join(home, '.local', 'bin'), { recursive: true });
    symlinkSync(TETHER_BIN, join(home, '.local', 'bin', 'tether'));
    symlinkSync(process.execPath, join(home, '.local', 'bin', 'node'));
    const unit = readFileSync(UNIT, 'utf8');
    const exec = /^ExecStart=(.*)$/m.exec(unit)?.[1]?.split(' ') ?? [];
    // `/usr/bin/env tether up %i --foreground …`: the lookup of tether is what is tested; --version stands for the rest.
    expect(exec.slice(0, 2)).toEqual(['/usr/bin/env', 'tether']);
    const r = spawnSync(exec[0]!, [exec[1]!, '--version'], { env: unitEnv(unit, home), encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
  });
});
