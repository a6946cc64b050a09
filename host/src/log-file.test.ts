// The agent's rotating log files on a real directory: appends continue the newest file, a full file starts the
// next, only the newest files stay, and current.log always points at the file being written.
import { mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CURRENT_LOG, type LogFileStream, logFileNumbers, openLogFile } from './log-file.js';

const flush = (s: LogFileStream) => new Promise<void>((resolve, reject) => s.flush((e) => (e ? reject(e) : resolve())));

describe('log files', () => {
  let dir = '';
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
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
