import type { ComponentChildren } from "preact";
import { useEffect, useRef } from "preact/hooks";

interface Props {
  title: string;
  titleId: string;
  children: ComponentChildren;
  /** Called on Escape or the close button; without it the modal cannot be dismissed. */
  onDismiss?: () => void;
  class?: string;
  describedBy?: string;
}

/** A native modal <dialog>: the browser traps focus, returns it on close and keeps the page inert.
 * Its colours follow the theme's light/dark type (see styles.css, [data-scheme]). */
export function Modal({ title, titleId, children, onDismiss, describedBy, class: extra }: Props) {
  const ref = useRef<HTMLDialogElement>(null);

  useEffect(() => {
    const dialog = ref.current;
    if (dialog && !dialog.open) dialog.showModal();
    return () => dialog?.close();
  }, []);

  const onCancel = (event: Event): void => {
    event.preventDefault();
    onDismiss?.();
  };

  const onClose = (): void => {
    // Browsers may force-close on a repeated Escape; a modal that must stay (joining) comes back.
    const dialog = ref.current;
    if (dialog && !onDismiss && dialog.isConnected) dialog.showModal();
  };

  return (
    <dialog
      ref={ref}
      class={`modal ${extra ?? ""}`}
      aria-labelledby={titleId}
      aria-describedby={describedBy}
      onCancel={onCancel}
      onClose={onClose}
    >
      <div class="modal-head">
        <h2 id={titleId}>{title}</h2>
        {onDismiss && (
          <button type="button" class="icon-button" aria-label="Close" onClick={onDismiss}>
            ×
          </button>
        )}
      </div>
      {children}
    </dialog>
  );
}
