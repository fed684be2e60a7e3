/** A client message id: 128 random bits as hex. crypto.randomUUID is missing outside secure contexts
 * (a phone on the LAN over plain http), getRandomValues is not. */
export function newClientMsgId(): string {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
