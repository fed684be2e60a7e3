import { useState } from "preact/hooks";
import { takeFlash } from "../auth";
import { AppHeader } from "../components/AppHeader";
import { Link } from "../components/Link";
import { MyRooms } from "../components/MyRooms";
import iconUrl from "../icon.svg";
import { navigate } from "../router";

export function Home() {
  const [code, setCode] = useState("");
  const [error, setError] = useState<string | null>(null);
  // A word from the page before (the account was deleted), shown once.
  const [flash, setFlash] = useState(takeFlash);

  const open = (event: Event): void => {
    event.preventDefault();
    // Accept a whole pasted link as well as a bare code.
    const match = /(?:\/c\/)?([A-Za-z0-9]{8})\/?$/.exec(code.trim());
    if (!match) {
      setError("A room code has 8 letters and digits, like K7M2QX9P.");
      return;
    }
    navigate(`/c/${match[1]!.toUpperCase()}`);
  };

  return (
    <div class="page">
      <AppHeader />
      <main class="home" id="main">
        {flash && (
          <p class="notice info home-flash" role="status">
            <span>{flash}</span>
            <button type="button" class="icon-button" aria-label="Dismiss" onClick={() => setFlash(null)}>
              ×
            </button>
          </p>
        )}
        <section class="hero">
          <img class="hero-logo" src={iconUrl} alt="" width={72} height={72} />
          <h1>ChatPop</h1>
          <p class="tagline">Open a chat room in one click, share the link, and chat. No account, no email, no phone.</p>
          <Link href="/create" class="button primary big">
            Create a ChatPop
          </Link>
        </section>
        <MyRooms />
        <section class="card join-by-code" aria-labelledby="have-code">
          <h2 id="have-code">Got a link or a code?</h2>
          <form onSubmit={open} noValidate>
            <label for="room-code">Room code or link</label>
            <div class="row">
              <input
                id="room-code"
                name="code"
                autocomplete="off"
                autocapitalize="characters"
                spellcheck={false}
                value={code}
                aria-invalid={error ? true : undefined}
                aria-describedby={error ? "room-code-error" : undefined}
                onInput={(e) => {
                  setCode(e.currentTarget.value);
                  setError(null);
                }}
              />
              <button type="submit" class="button">
                Open
              </button>
            </div>
            {error && (
              <p id="room-code-error" class="field-error" role="alert">
                {error}
              </p>
            )}
          </form>
        </section>
        <ul class="features">
          <li>
            <strong>Private rooms</strong> with an access code
          </li>
          <li>
            <strong>Join with a username</strong>, roll the dice for one
          </li>
          <li>
            <strong>Made for phones</strong>, just as good on a desktop
          </li>
        </ul>
      </main>
    </div>
  );
}
