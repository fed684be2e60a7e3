/** The username rules, as the server applies them, so mistakes show before a round trip. */
export const USERNAME_MIN = 5;
export const USERNAME_MAX = 15;
const USERNAME_CHARS = /^[A-Za-z0-9_]+$/;

export function usernameError(raw: string): string | null {
  const name = raw.trim();
  if (!name) return "Choose a username.";
  if (name.length < USERNAME_MIN || name.length > USERNAME_MAX) {
    return `A username has ${USERNAME_MIN} to ${USERNAME_MAX} characters.`;
  }
  if (!USERNAME_CHARS.test(name)) return "Use only letters, digits and underscores.";
  return null;
}

export function emailError(raw: string): string | null {
  const email = raw.trim();
  if (!email) return "Enter your email address.";
  if (!/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(email)) return "Enter a valid email address, like name@example.com.";
  return null;
}

export const PASSWORD_MIN = 8;

export function passwordError(raw: string): string | null {
  if (raw.length < PASSWORD_MIN) return `Use at least ${PASSWORD_MIN} characters.`;
  if (!raw.trim()) return "The password cannot be only spaces.";
  return null;
}
