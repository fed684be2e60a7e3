import { AppHeader } from "../components/AppHeader";
import { Link } from "../components/Link";

export function Missing({ title, text }: { title: string; text: string }) {
  return (
    <div class="page">
      <AppHeader />
      <main class="narrow" id="main">
        <h1>{title}</h1>
        <p>{text}</p>
        <p>
          <Link href="/" class="button">
            Go to the home page
          </Link>
        </p>
      </main>
    </div>
  );
}
