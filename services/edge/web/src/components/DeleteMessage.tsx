/** Deleting a message is for good and for everyone, so it asks once more, showing which message. */
import { useState } from "preact/hooks";
import type { Message } from "../api";
import { mediaWords } from "../media";
import { Modal } from "./Modal";
import "./room-settings.css"; // .modal-actions and .button.danger, shared with closing a room
import "./reactions.css";

export function DeleteMessageDialog({
  message,
  mine,
  onConfirm,
  onDismiss,
}: {
  message: Message;
  /** The person's own message; otherwise the host deletes someone else's. */
  mine: boolean;
  /** Deletes; resolves when done either way (a refusal is told in the chat's notice). */
  onConfirm: () => Promise<unknown>;
  onDismiss: () => void;
}) {
  const [busy, setBusy] = useState(false);
  const confirm = async (): Promise<void> => {
    setBusy(true);
    try {
      await onConfirm();
    } finally {
      onDismiss();
    }
  };
  return (
    <Modal
      title={mine ? "Delete your message?" : `Delete ${message.sender.username}'s message?`}
      titleId="delete-message-title"
      describedBy="delete-message-description"
      onDismiss={busy ? () => undefined : onDismiss}
    >
      <div class="form">
        <p id="delete-message-description">
          {mine
            ? "Everyone in the room will see “Message deleted” in its place. This can't be undone."
            : "Everyone in the room will see “Deleted by the host” in its place. This can't be undone."}
        </p>
        <blockquote class="delete-preview">{message.text || mediaWords(message.media)}</blockquote>
        <div class="modal-actions">
          <button type="button" class="button" onClick={onDismiss} disabled={busy}>
            Cancel
          </button>
          <button type="button" class="button danger" onClick={() => void confirm()} disabled={busy}>
            {busy ? "Deleting…" : "Delete message"}
          </button>
        </div>
      </div>
    </Modal>
  );
}
