import { useEffect } from "preact/hooks";
import { Create } from "./pages/Create";
import { Account } from "./pages/Account";
import { Admin } from "./pages/Admin";
import { Login, Signup } from "./pages/Auth";
import { ForgotPassword, ResetPassword } from "./pages/PasswordReset";
import { Home } from "./pages/Home";
import { Missing } from "./pages/Missing";
import { Earnings } from "./pages/Earnings";
import { Payments } from "./pages/Payments";
import { Payouts, TestOnboarding } from "./pages/Payouts";
import { RoomPage } from "./pages/Room";
import { BackRoomPage } from "./pages/BackRoom";
import { useRoute } from "./router";
import { applyTheme, DEFAULT_THEME } from "./themes";

export function App() {
  const route = useRoute();

  useEffect(() => {
    // Pages other than a room (and the create form, which previews its choice) use the default theme.
    const inRoom = route.name === "room" || route.name === "back-room";
    if (!inRoom && route.name !== "create") applyTheme(DEFAULT_THEME);
    // Move focus to the new page's main content for keyboard and screen reader users.
    const main = document.getElementById("main");
    if (main && !inRoom) {
      main.setAttribute("tabindex", "-1");
      main.focus({ preventScroll: true });
    }
  }, [route.name, route.name === "room" || route.name === "back-room" ? route.code : ""]);

  switch (route.name) {
    case "home":
      return <Home />;
    case "create":
      return <Create />;
    case "login":
      return <Login next={route.next} />;
    case "signup":
      return <Signup next={route.next} />;
    case "forgot":
      return <ForgotPassword next={route.next} />;
    case "reset":
      return <ResetPassword token={route.token} />;
    case "account":
      return <Account />;
    case "admin":
      return <Admin />;
    case "earnings":
      return <Earnings />;
    case "payouts":
      return <Payouts />;
    case "test-onboarding":
      return <TestOnboarding />;
    case "payments":
      return <Payments />;
    case "room":
      return <RoomPage key={route.code} code={route.code} />;
    case "back-room":
      return <BackRoomPage key={`back-${route.code}`} code={route.code} />;
    case "missing":
      return <Missing title="Page not found" text="There is nothing at this address." />;
  }
}
