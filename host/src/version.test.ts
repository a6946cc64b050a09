import { describe, expect, it } from 'vitest';
import { otherBuild } from './version.js';

describe('otherBuild', () => {
  it('tells an agent running other code than this command, an agent older than build reporting, and nothing when either build is unknown', () => {
    expect(otherBuild('aaaa', 'bbbb')).toBe(
      'the agent runs another build of tether (aaaa) than this command (bbbb): it was started before tether was rebuilt or upgraded',
    );
    expect(otherBuild('aaaa', 'aaaa')).toBeNull();
    expect(otherBuild(null, 'bbbb')).toBeNull();
    expect(otherBuild(undefined, 'bbbb')).toBe(
      'the agent runs an older tether than this command (bbbb), from before agents reported their build: it was started before tether was upgraded',
    ); // an agent from before builds were reported: its status has no build
    expect(otherBuild(undefined, null)).toBeNull();
    expect(otherBuild('aaaa', null)).toBeNull(); // run from sources
  });
});
