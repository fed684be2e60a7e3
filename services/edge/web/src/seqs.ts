/** Which seqs of a room's log this client accounts for: every entry (a message or a change such as a
 * reaction or a deletion) it has applied, or knows a history page folded into the messages it holds.
 *
 * `top` is the resume point: every seq up to it is accounted for, so a socket opened with
 * `after_seq=top` gets exactly what is missing. Seqs beyond a hole are kept as disjoint ranges until
 * the hole is filled. Kept apart from the messages themselves: most entries are not messages. */
export class SeqLedger {
  private topSeq = 0;
  /** Disjoint, sorted, not touching each other or `top`: every range starts above top + 1. */
  private ranges: Array<[number, number]> = [];

  get top(): number {
    return this.topSeq;
  }

  /** Seqs accounted for beyond a hole: the start of the lowest such range, or null when none. */
  firstAboveHole(): number | null {
    return this.ranges[0]?.[0] ?? null;
  }

  has(seq: number): boolean {
    if (seq <= this.topSeq) return true;
    return this.ranges.some(([lo, hi]) => lo <= seq && seq <= hi);
  }

  /** Everything up to `seq` is accounted for (the newest history page folds it all in). */
  raiseTo(seq: number): void {
    if (seq > this.topSeq) this.topSeq = seq;
    this.settle();
  }

  /** Every seq from `lo` to `hi` (both included) is accounted for. */
  add(lo: number, hi: number = lo): void {
    if (!Number.isFinite(lo) || !Number.isFinite(hi) || hi < lo || hi <= this.topSeq) return;
    let start = Math.max(lo, this.topSeq + 1);
    let end = hi;
    const kept: Array<[number, number]> = [];
    for (const [a, b] of this.ranges) {
      if (b + 1 < start || a > end + 1) kept.push([a, b]);
      else {
        start = Math.min(start, a);
        end = Math.max(end, b);
      }
    }
    kept.push([start, end]);
    kept.sort((x, y) => x[0] - y[0]);
    this.ranges = kept;
    this.settle();
  }

  reset(): void {
    this.topSeq = 0;
    this.ranges = [];
  }

  /** Ranges that now touch `top` extend it. */
  private settle(): void {
    while (this.ranges.length && this.ranges[0]![0] <= this.topSeq + 1) {
      const [, hi] = this.ranges.shift()!;
      if (hi > this.topSeq) this.topSeq = hi;
    }
  }
}
