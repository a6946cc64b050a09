// The agent's rotating log files on a real directory: appends continue the newest file, a full file starts the
// next, only the newest files stay, and current.log always points at the file being written.
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { type LogFileStream, openLogFile } from './log-file.js';
import { CURRENT_LOG, logFileNumbers } from './log-names.js';

const flush = (s: LogFileStream) => new Promise<void>((resolve, reject) => s.flush((e) => (e ? reject(e) : resolve())));

describe('log files', () => {
  let dir = '';
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it.skipIf(process.getuid?.() !== 0)('keeps a process running when the log disk and its stderr are full', () => {
    dir = mkdtempSync(join(tmpdir(), 'tether-logs-full-'));
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir]);
    expect(mounted.status, String(mounted.stderr)).toBe(0);
    const full = openSync('/dev/full', 'w');
    try {
      const logFile = fileURLToPath(new URL('../dist/log-file.js', import.meta.url));
      const script = `
        import { ignoreStdioErrors, openLogFile } from ${JSON.stringify(logFile)};
        ignoreStdioErrors();
        const log = openLogFile({ dir: ${JSON.stringify(dir)}, maxBytes: 1e6, keep: 3 });
        for (let i = 0; i < 2000; i++) log.write(JSON.stringify({ msg: 'line ' + i, pad: 'x'.repeat(200) }) + '\\n');
        process.stderr.write('still here\\n');
        console.log('done');`;
      const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
        stdio: ['ignore', full, full],
        timeout: 30_000,
      });
      expect(child.status).toBe(0);
    } finally {
      closeSync(full);
      spawnSync('umount', [dir]);
    }
  });

  it('rotates at the size, keeps the newest files and points current.log at the one being written', async () => {
    dir = mkdtempSync(join(tmpdir(), 'tether-logs-'));
    const log = openLogFile({ dir, maxBytes: 100, keep: 3 });
    expect(readlinkSync(join(dir, CURRENT_LOG))).toBe('tether.1.log');
    const line = (i: number) => `{"msg":"line ${String(i).padStart(3, '0')}","pad":"${'x'.repeat(20)}"}\n`; // 41 bytes
    for (let i = 0; i < 12; i++) log.write(line(i));
    await flush(log);
    // 3 lines (123 bytes) fill a file; 12 lines make files 1..4 and start 5; the newest 3 stay.
    expect(logFileNumbers(dir)).toEqual([3, 4, 5]);
    expect(readlinkSync(join(dir, CURRENT_LOG))).toBe('tether.5.log');
    const kept = [3, 4].map((n) => readFileSync(join(dir, `tether.${n}.log`), 'utf8')).join('');
    expect(kept).toBe([6, 7, 8, 9, 10, 11].map(line).join(''));
    // Owner-only, the first file and those rotation opened.
    for (const n of [3, 4, 5]) expect(statSync(join(dir, `tether.${n}.log`)).mode & 0o777).toBe(0o600);
  });

  it('continues the newest file after a restart, and starts a new one when it is full', async () => {
    dir = mkdtempSync(join(tmpdir(), 'tether-logs-'));
    writeFileSync(join(dir, 'tether.7.log'), 'earlier\n');
    const log = openLogFile({ dir, maxBytes: 1000, keep: 5 });
    log.write('later\n');
    await flush(log);
    expect(readFileSync(join(dir, 'tether.7.log'), 'utf8')).toBe('earlier\nlater\n');
    expect(readlinkSync(join(dir, CURRENT_LOG))).toBe('tether.7.log');

    const again = openLogFile({ dir, maxBytes: 10, keep: 5 }); // 14 bytes: already full
    again.write('fresh\n');
    await flush(again);
    expect(readFileSync(join(dir, 'tether.8.log'), 'utf8')).toBe('fresh\n');
    expect(readlinkSync(join(dir, CURRENT_LOG))).toBe('tether.8.log');
  });
});
