// A command run for its output is named by its own first line, not by the marker printed before it.
import type { Client } from 'ssh2';
import { describe, expect, it } from 'vitest';
import { execGuestOutput } from './guest-shell.js';

describe('execGuestOutput', () => {
  it("names a script run for its output by the script's own first line, not the marker printed before it", async () => {
    const client = { exec: () => {} } as unknown as Client;
    await expect(execGuestOutput(client, 'P=/home/me/share; mkdir -p "$P"\nstat "$P"', 50)).rejects.toThrow(
      new Error('guest command timed out after 50ms: P=/home/me/share; mkdir -p "$P" …'),
    );
  });
});
