/** What a call that may throw ended in: its GanError's code, another error's text, or 'accepted'. */
import { GanError } from '../shared/wire/errors.js';

export function codeOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    return e instanceof GanError ? e.code : String(e);
  }
  return 'accepted';
}
