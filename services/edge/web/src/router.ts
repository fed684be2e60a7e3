/** A tiny History API router: "/", "/create", "/login", "/signup", "/forgot-password",
 * "/reset-password", "/account", "/admin", "/earnings", "/payouts", "/payouts/test-onboarding",
 * "/payments", "/c/{code}", "/c/{code}/back-room". The edge serves index.html for each of these paths, so links can be
 * shared and reloaded. */
import { useEffect, useState } from "preact/hooks";

export type Route =
  | { name: "home" }
  | { name: "create" }
  | { name: "login"; next: string }
  | { name: "signup"; next: string }
  | { name: "forgot"; next: string }
  | { name: "reset"; token: string }
  | { name: "account" }
  | { name: "admin" }
  | { name: "earnings" }
  | { name: "payouts" }
  | { name: "test-onboarding" }
  | { name: "payments" }
  | { name: "room"; code: string }
  | { name: "back-room"; code: string }
  | { name: "missing" };

export function safeNext(raw: string | null): string {
  // Only same-site paths: never send someone to another origin after signing in.
  return raw && raw.startsWith("/") && !raw.startsWith("//") ? raw : "/";
}

export function parse(location: Location | URL): Route {
  const path = location.pathname.replace(/\/+$/, "") || "/";
  const next = safeNext(new URLSearchParams(location.search).get("next"));
  if (path === "/") return { name: "home" };
  if (path === "/create") return { name: "create" };
  if (path === "/login") return { name: "login", next };
  if (path === "/signup") return { name: "signup", next };
  if (path === "/forgot-password") return { name: "forgot", next };
  if (path === "/reset-password") return { name: "reset", token: new URLSearchParams(location.search).get("token") ?? "" };
  if (path === "/account") return { name: "account" };
  if (path === "/admin") return { name: "admin" };
  if (path === "/earnings") return { name: "earnings" };
  if (path === "/payouts") return { name: "payouts" };
  if (path === "/payouts/test-onboarding") return { name: "test-onboarding" };
  if (path === "/payments") return { name: "payments" };
  const room = /^\/c\/([A-Za-z0-9_-]{1,32})$/.exec(path);
  if (room) return { name: "room", code: room[1]!.toUpperCase() };
  const backRoom = /^\/c\/([A-Za-z0-9_-]{1,32})\/back-room$/.exec(path);
  if (backRoom) return { name: "back-room", code: backRoom[1]!.toUpperCase() };
  return { name: "missing" };
}

const listeners = new Set<() => void>();

export function navigate(to: string, replace = false): void {
  if (replace) history.replaceState(null, "", to);
  else history.pushState(null, "", to);
  window.scrollTo(0, 0);
  for (const listener of listeners) listener();
}

window.addEventListener("popstate", () => {
  for (const listener of listeners) listener();
});

export function useRoute(): Route {
  const [route, setRoute] = useState<Route>(() => parse(window.location));
  useEffect(() => {
    const update = (): void => setRoute(parse(window.location));
    listeners.add(update);
    return () => listeners.delete(update);
  }, []);
  return route;
}

/** Follow an in-app link without a page load (new-tab clicks and modifiers keep their meaning). */
export function onLinkClick(event: MouseEvent): void {
  if (event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) {
    return;
  }
  const anchor = (event.currentTarget as HTMLAnchorElement | null) ?? null;
  if (!anchor || anchor.target || anchor.origin !== window.location.origin) return;
  event.preventDefault();
  navigate(anchor.pathname + anchor.search);
}
