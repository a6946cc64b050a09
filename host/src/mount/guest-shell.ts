// Guest commands whose stdout the mount code parses (the guest user's shell, mount tables): whatever the login
// shell's startup files print (rc files that greet) is cut off at a marker printed first. Channels and deadlines
// are ssh/exec.ts's.
import type { Client } from 'ssh2';
import { type ExecResult, execOn } from '../ssh/exec.js';
import { commandLabel } from '../ssh/shell-quote.js';
import { afterMarker, startupMarker } from './startup-output.js';

/**
 * Runs `cmd` in the guest; stdout holds only `cmd`'s output. When the marker never came (the shell failed before
 * running anything), stdout is empty and the exit status says so.
 */
export async function execGuestOutput(client: Client, cmd: string, timeoutMs?: number): Promise<ExecResult> {
  const marker = startupMarker('tether-out');
  const r = await execOn(client, `${marker.print}; ${cmd}`, timeoutMs, commandLabel(cmd));
  return { ...r, stdout: afterMarker(r.stdout, marker) ?? '' };
}
