/** Keep the app exactly over the visible viewport, so the on-screen keyboard shrinks the chat
 * (the composer stays just above it) instead of pushing the page up or jumping the layout.
 *
 * iOS pans the visual viewport down when the keyboard opens instead of resizing the layout; `--app-top`
 * follows that pan so the fixed chat screen stays where the eye is. Set through the CSSOM
 * (style.setProperty), which the strict CSP allows; inline style attributes it would not. */
export function trackViewportHeight(): void {
  const root = document.documentElement;
  const viewport = window.visualViewport;
  const update = (): void => {
    const height = viewport ? viewport.height : window.innerHeight;
    root.style.setProperty("--app-height", `${Math.round(height)}px`);
    root.style.setProperty("--app-top", `${Math.max(0, Math.round(viewport?.offsetTop ?? 0))}px`);
  };
  update();
  viewport?.addEventListener("resize", update);
  viewport?.addEventListener("scroll", update);
  window.addEventListener("resize", update);
}
