/** The choices offered for a room's settings, when creating it and when the host edits it. */

export const RETENTION_CHOICES: { days: number; label: string }[] = [
  { days: 1, label: "1 day" },
  { days: 7, label: "7 days" },
  { days: 30, label: "30 days" },
  { days: 90, label: "90 days" },
  { days: 365, label: "1 year" },
  { days: 0, label: "Forever" },
];

export const SLOW_MODE_CHOICES: { seconds: number; label: string }[] = [
  { seconds: 0, label: "Off" },
  { seconds: 5, label: "5 seconds" },
  { seconds: 10, label: "10 seconds" },
  { seconds: 30, label: "30 seconds" },
  { seconds: 60, label: "1 minute" },
  { seconds: 300, label: "5 minutes" },
  { seconds: 900, label: "15 minutes" },
  { seconds: 3600, label: "1 hour" },
];

/** "one message every 30 seconds": slow mode as people read it. */
export function slowModeWords(seconds: number): string {
  const choice = SLOW_MODE_CHOICES.find((c) => c.seconds === seconds);
  const span = choice ? choice.label : `${seconds} seconds`;
  return `one message every ${span.replace(/^1 /, "")}`;
}
