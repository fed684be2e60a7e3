/** "Alice is typing…", "Alice and Bob are typing…", "Several people are typing…". */
export function typingText(names: readonly string[]): string {
  const unique = [...new Set(names)];
  if (unique.length === 0) return "";
  if (unique.length === 1) return `${unique[0]} is typing…`;
  if (unique.length === 2) return `${unique[0]} and ${unique[1]} are typing…`;
  return "Several people are typing…";
}
