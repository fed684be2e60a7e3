/** The people in the room: a header button "N online" that opens a panel listing every participant,
 * online ones first, with host and verified marks, updated live. On wide screens the panel is a side
 * column beside the conversation; on phones a sheet over it. Either way it is a <dialog> labelled by
 * its heading, closed by Escape or its close button, and focus returns to the button that opened it. */
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import type { ChatSession } from "../chat";
import { peopleOf, type Person, type RoomPeople } from "../presence";
import { CheckIcon } from "./Icons";
import { MoreMenu, type MenuAction } from "./Moderation";
import "./people.css";

const SIDE_PANEL_QUERY = "(min-width: 900px)";
const PANEL_ID = "people-panel";
const TITLE_ID = "people-title";

function usePeople(chat: ChatSession): RoomPeople {
  const people = useMemo(() => peopleOf(chat), [chat]);
  const [, setTick] = useState(0);
  useEffect(() => people.subscribe(() => setTick((n) => n + 1)), [people]);
  useEffect(() => () => people.stop(), [people]);
  return people;
}

function useWide(): boolean {
  const [wide, setWide] = useState(() => window.matchMedia(SIDE_PANEL_QUERY).matches);
  useEffect(() => {
    const query = window.matchMedia(SIDE_PANEL_QUERY);
    const onChange = (): void => setWide(query.matches);
    query.addEventListener("change", onChange);
    return () => query.removeEventListener("change", onChange);
  }, []);
  return wide;
}

/** Two heads, beside the number of people online. */
function PeopleIcon() {
  return (
    <svg class="people-icon" viewBox="0 0 24 24" width={15} height={15} aria-hidden="true" focusable="false" fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" stroke-linejoin="round">
      <circle cx="9" cy="8" r="3.5" />
      <path d="M2.5 20a6.5 6.5 0 0 1 13 0" />
      <path d="M16 4.6a3.5 3.5 0 0 1 0 6.8" />
      <path d="M18.5 14.2a6.5 6.5 0 0 1 3 5.8" />
    </svg>
  );
}

function onlineWords(count: number): string {
  return `${count.toLocaleString()} online`;
}

/** What this person may do to someone in the list (mute, ban as the host); none for themselves. */
export type PersonActions = (person: Person) => MenuAction[];

function PersonRow({ person, me, actions }: { person: Person; me: boolean; actions?: PersonActions }) {
  return (
    <li class="person" data-online={person.online ? "true" : "false"} data-participant-id={person.id}>
      <span class="presence-dot" aria-hidden="true" />
      <span class="person-name">{person.username}</span>
      {person.verified && (
        <span class="badge verified" title="Verified username">
          <CheckIcon />
          <span class="sr-only"> verified</span>
        </span>
      )}
      {person.is_host && <span class="badge host">Host</span>}
      {me && <span class="person-you">(you)</span>}
      <span class="sr-only">{person.online ? ", online" : ", offline"}</span>
      {actions && (
        <span class="person-actions">
          <MoreMenu id={`person-more-${person.id}`} label={`Actions for ${person.username}`} actions={actions(person)} />
        </span>
      )}
    </li>
  );
}

function PeopleList({ people, me, actions }: { people: RoomPeople; me: string; actions?: PersonActions }) {
  if (!people.loaded) {
    return people.error ? (
      <div class="people-state" role="alert">
        <p>{people.error}</p>
        <button type="button" class="button small" onClick={() => void people.refresh()}>
          Try again
        </button>
      </div>
    ) : (
      <p class="people-state" role="status">
        Loading the people in this room…
      </p>
    );
  }
  const everyone = people.sorted();
  const online = everyone.filter((person) => person.online);
  const away = everyone.filter((person) => !person.online);
  return (
    <div class="people-groups">
      <section aria-labelledby="people-online">
        <h3 id="people-online" class="people-group-title">
          Online ({online.length})
        </h3>
        {online.length ? (
          <ul class="people-list">
            {online.map((person) => (
              <PersonRow key={person.id} person={person} me={person.id === me} actions={actions} />
            ))}
          </ul>
        ) : (
          <p class="people-none">Nobody is online right now.</p>
        )}
      </section>
      {away.length > 0 && (
        <section aria-labelledby="people-away">
          <h3 id="people-away" class="people-group-title">
            Offline ({away.length})
          </h3>
          <ul class="people-list">
            {away.map((person) => (
              <PersonRow key={person.id} person={person} me={person.id === me} actions={actions} />
            ))}
          </ul>
        </section>
      )}
    </div>
  );
}

function PeoplePanel({
  people,
  me,
  wide,
  actions,
  onClose,
}: {
  people: RoomPeople;
  me: string;
  wide: boolean;
  actions?: PersonActions;
  onClose: () => void;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  const heading = useRef<HTMLHeadingElement>(null);

  useEffect(() => {
    const dialog = ref.current;
    if (!dialog) return;
    if (dialog.open) dialog.close();
    // A side column leaves the conversation usable; on a phone the sheet takes the focus.
    if (wide) dialog.show();
    else dialog.showModal();
    heading.current?.focus();
    return () => dialog.close();
  }, [wide]);

  return (
    <dialog
      ref={ref}
      id={PANEL_ID}
      class={`people-panel ${wide ? "side" : "sheet"}`}
      aria-labelledby={TITLE_ID}
      onCancel={(event) => {
        event.preventDefault();
        onClose();
      }}
      onKeyDown={(event) => {
        if (event.key === "Escape") {
          event.preventDefault();
          onClose();
        }
      }}
    >
      <div class="people-head">
        <h2 id={TITLE_ID} ref={heading} tabIndex={-1}>
          People in the room
        </h2>
        <button type="button" class="icon-button" aria-label="Close the list of people" onClick={onClose}>
          ×
        </button>
      </div>
      <PeopleList people={people} me={me} actions={actions} />
    </dialog>
  );
}

/** The "N online" button for the room header's status line, with the panel it opens. */
export function PeopleButton({ chat, personActions }: { chat: ChatSession; personActions?: PersonActions }) {
  const people = usePeople(chat);
  const wide = useWide();
  const [open, setOpen] = useState(false);
  const button = useRef<HTMLButtonElement>(null);
  const refocus = useRef(false);
  const count = people.onlineCount();

  // Back to the button once the panel is gone (while a modal sheet is open the page is inert).
  useEffect(() => {
    if (open || !refocus.current) return;
    refocus.current = false;
    button.current?.focus();
  }, [open]);

  const close = (): void => {
    refocus.current = true;
    setOpen(false);
  };

  return (
    <>
      <button
        ref={button}
        type="button"
        class="people-button"
        aria-expanded={open}
        aria-controls={open ? PANEL_ID : undefined}
        aria-label={`People in the room: ${onlineWords(count)}`}
        onClick={() => (open ? close() : setOpen(true))}
      >
        <PeopleIcon />
        <span class="people-count" aria-hidden="true">
          {count.toLocaleString()}
          <span class="people-count-word"> online</span>
        </span>
      </button>
      {open && <PeoplePanel people={people} me={chat.me.id} wide={wide} actions={personActions} onClose={close} />}
    </>
  );
}
