import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { install, SERVICE_NAME, uninstall } from './install.js';

// Real files in temp directories; systemctl is recorded instead of run (no systemd in the test environment).

let dir: string;
let calls: string[];
let bundle: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tether-install-'));
  calls = [];
  bundle = join(dir, 'tether-guest.cjs');
  writeFileSync(bundle, 'console.log(1)');
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function run(restart?: boolean) {
  return install({
    socketOwner: 'alice',
    restart,
    libDir: join(dir, 'lib'),
    unitDir: dir,
    systemctl: (args) => calls.push(args.join(' ')),
    self: { kind: 'bundle', node: '/usr/bin/node', path: bundle },
  });
}

describe('install', () => {
  it('copies the agent, writes the unit and starts it; restarts on change or when asked', () => {
    const first = run();
    expect(first.changed).toBe(true);
    expect(calls).toEqual(['daemon-reload', `enable ${SERVICE_NAME}`, `restart ${SERVICE_NAME}`]);
    const unit = readFileSync(first.unitPath, 'utf8');
    expect(unit).toContain(`ExecStart=/usr/bin/node ${join(dir, 'lib/tether-guest.cjs')} run --socket-owner alice`);
    expect(unit).toContain('Restart=always');
    expect(unit).toContain('LimitNOFILE=65536');
    expect(unit).toContain('StartLimitIntervalSec=0');
    expect(statSync(first.execPath).mode & 0o777).toBe(0o755);

    calls = [];
    expect(run().changed).toBe(false);
    expect(calls).toEqual([`enable ${SERVICE_NAME}`, `start ${SERVICE_NAME}`]);

    // Nothing changed, but the running agent's socket does not answer: restart it.
    calls = [];
    expect(run(true).changed).toBe(false);
    expect(calls).toEqual([`enable ${SERVICE_NAME}`, `restart ${SERVICE_NAME}`]);

    writeFileSync(bundle, 'console.log(2)');
    calls = [];
    expect(run().changed).toBe(true);
    expect(calls).toEqual([`enable ${SERVICE_NAME}`, `restart ${SERVICE_NAME}`]);
    expect(readFileSync(first.execPath, 'utf8')).toBe('console.log(2)');
  });

  it('uninstalls the unit and the executable', () => {
    const { unitPath, execPath } = run();
    calls = [];
    uninstall({ libDir: join(dir, 'lib'), unitDir: dir, systemctl: (args) => calls.push(args.join(' ')) });
    expect(calls).toEqual([`disable --now ${SERVICE_NAME}`, 'daemon-reload']);
    expect(existsSync(unitPath) || existsSync(execPath)).toBe(false);
  });
});
