;;; lmrs.el --- Inline code completions from the lmrs language server -*- lexical-binding: t -*-

;; Version: 0.1.0
;; Package-Requires: ((emacs "27.1") (jsonrpc "1.0.9"))
;; Keywords: tools, convenience
;; SPDX-License-Identifier: MIT OR Apache-2.0

;;; Commentary:

;; A thin client for `lmrs lsp', a local language server that suggests code with a GGUF model.
;;
;; - `lmrs-eglot-setup' registers the server with eglot, and loading lsp-mode registers it there
;;   as an add-on client (it then runs beside your other servers).
;; - `lmrs-mode', a minor mode, asks the server for `textDocument/inlineCompletion' shortly after
;;   you type and shows the suggestion as ghost text (an overlay).  While it is shown:
;;     TAB  accept        M-f  accept a word      M-e  accept a line
;;     M-n / M-p  next / previous alternative     C-g  dismiss
;;
;;   (require 'lmrs)
;;   (setq lmrs-model-path "~/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
;;   (lmrs-eglot-setup '(python-mode rust-mode))   ; or rely on lsp-mode
;;   (add-hook 'prog-mode-hook #'lmrs-mode)
;;
;; The model loads in the background; `M-x lmrs-status' tells whether it is ready.  The server's
;; log is its stderr: the `*EGLOT (...) stderr*' buffer (eglot) or `*lmrs::stderr*' (lsp-mode).

;;; Code:

(require 'cl-lib)
(require 'jsonrpc)
(require 'subr-x)

(defgroup lmrs nil
  "Inline code completions from the lmrs language server."
  :group 'tools
  :prefix "lmrs-")

(defcustom lmrs-server-command nil
  "Command that starts the language server, e.g. (\"/opt/lmrs/bin/lmrs\" \"lsp\").
nil: `lmrs lsp' with the lmrs found on `exec-path', else ~/.cargo/bin/lmrs (where
`cargo install' puts it, often not on an editor's PATH)."
  :type '(choice (const :tag "Find lmrs" nil) (repeat string)))

(defconst lmrs-install-hint
  "`cargo install --locked --path server' in a checkout of lmrs (or `cargo install --locked --git <lmrs repository URL> lmrs-lsp')"
  "How to install the server binary.")

(defun lmrs-find-server ()
  "The lmrs executable: on `exec-path', else ~/.cargo/bin/lmrs; nil when neither exists."
  (or (executable-find "lmrs")
      (let ((cargo (expand-file-name ".cargo/bin/lmrs" (or (getenv "HOME") "~"))))
        (and (file-executable-p cargo) (not (file-directory-p cargo)) cargo))))

(defun lmrs--missing-server-message ()
  (concat "lmrs: the server binary was not found (not on exec-path, not in ~/.cargo/bin). "
          "Install it with " lmrs-install-hint ", or set `lmrs-server-command'."))

(defvar lmrs--missing-reported nil
  "Whether the missing server binary was reported (lsp-mode asks for it often).")

(defun lmrs-server-command ()
  "The command that starts the server: `lmrs-server-command' when set, else the found lmrs.
Signals a `user-error' that says how to install lmrs when there is none."
  (or lmrs-server-command
      (let ((found (lmrs-find-server)))
        (if found
            (list found "lsp")
          (lmrs--set-status 'error (lmrs--missing-server-message))
          (user-error "%s" (lmrs--missing-server-message))))))

(defcustom lmrs-model-path nil
  "GGUF model file; nil uses the server's default location."
  :type '(choice (const nil) file))

(defcustom lmrs-threads nil
  "Engine threads; nil lets the server choose."
  :type '(choice (const nil) integer))

(defcustom lmrs-initialization-options nil
  "Other server options, a plist with the server's camelCase keys, e.g. (:maxTokens 48)."
  :type 'plist)

(defcustom lmrs-delay 0.15
  "Seconds after the last keystroke before a suggestion is requested."
  :type 'number)

(defcustom lmrs-disabled-modes nil
  "Major modes (and their derivatives) in which `lmrs-mode' asks for nothing."
  :type '(repeat symbol))

(defface lmrs-ghost-face '((t :inherit shadow))
  "Face of the suggested text.")

;;;; Server registration

(defun lmrs--initialization-options ()
  "The `initializationOptions' plist sent to the server."
  (append (and lmrs-model-path (list :modelPath (expand-file-name lmrs-model-path)))
          (and lmrs-threads (list :threads lmrs-threads))
          lmrs-initialization-options))

(defvar lmrs-status 'off
  "The server as last reported: off, loading, ready, busy or error.")
(defvar lmrs-status-message ""
  "The server's last progress or error message.")

(defun lmrs--set-status (status &optional message)
  (setq lmrs-status status)
  (when message (setq lmrs-status-message message))
  (force-mode-line-update t))

(defun lmrs--on-progress (token value)
  "Track the model's progress the server reports under TOKEN with VALUE.
Only loading it (lmrs/load/N) and downloading it (lmrs/pull/N, the server's autoPull) count;
the workspace index's progress says nothing about the model."
  (when (and (stringp token)
             (or (string-prefix-p "lmrs/load/" token) (string-prefix-p "lmrs/pull/" token)))
    (let* ((kind (plist-get value :kind))
           (pct (plist-get value :percentage))
           (msg (concat (or (plist-get value :message) "")
                        (if (numberp pct) (format " (%d%%)" pct) ""))))
      (pcase kind
        ("begin" (lmrs--set-status 'loading msg))
        ("report" (lmrs--set-status 'loading msg))
        ;; The load ends with "lmrs: model ready (...)" or with the error; a download with
        ;; "lmrs: NAME downloaded" (the load follows) or with the error.
        ("end" (lmrs--set-status (cond ((string-match-p "ready" msg) 'ready)
                                       ((string-match-p "downloaded\\'" msg) 'loading)
                                       (t 'error))
                                 msg))))))

(with-eval-after-load 'eglot
  ;; A server class of our own lets us add what eglot (before 1.12) lacks: work-done progress, so
  ;; that the mode line can say whether the model has loaded.
  (defclass lmrs-eglot-server (eglot-lsp-server) ()
    :documentation "The lmrs language server under eglot.")

  (cl-defmethod eglot-client-capabilities ((_s lmrs-eglot-server))
    (let* ((caps (copy-tree (cl-call-next-method)))
           (window (plist-get caps :window)))
      (plist-put caps :window (plist-put window :workDoneProgress t))))

  ;; The method symbols below are written unquoted, as eglot itself does: Emacs 28 does not
  ;; evaluate `eql' specializers, Emacs >= 29 treats an unbound symbol as itself.
  (cl-defmethod eglot-handle-request
    ((_s lmrs-eglot-server) (_m (eql window/workDoneProgress/create)) &rest _)
    nil)

  (cl-defmethod eglot-handle-notification
    ((_s lmrs-eglot-server) (_m (eql $/progress)) &key token value)
    (lmrs--on-progress token value)
    ;; Eglot always has a method to fall back to (at worst its "unknown notification" one).
    (cl-call-next-method))

  (cl-defmethod eglot-handle-notification
    ((_s lmrs-eglot-server) (_m (eql window/showMessage)) &key type message)
    (when (and (numberp type) (<= type 1)) (lmrs--set-status 'error message))
    (cl-call-next-method)))

(defun lmrs-eglot-contact (&optional _interactive)
  "The eglot contact for lmrs (a function, so options are read when the server starts)."
  `(lmrs-eglot-server ,@(lmrs-server-command)
                      :initializationOptions ,(or (lmrs--initialization-options)
                                                  ;; an empty JSON object, not null
                                                  (make-hash-table))))

;;;###autoload
(defun lmrs-eglot-setup (&optional modes)
  "Register lmrs with eglot for MODES (major modes, derived modes included).
Eglot runs one server per buffer, so MODES are put in front of the existing entries.  Without
MODES lmrs is added last, for `prog-mode' buffers that have no other server."
  (require 'eglot)
  (defvar eglot-server-programs)
  (if modes
      (push (cons modes #'lmrs-eglot-contact) eglot-server-programs)
    (add-to-list 'eglot-server-programs '(prog-mode . lmrs-eglot-contact) t)))

(defun lmrs--lsp-mode-register ()
  "Register lmrs as an lsp-mode add-on client (runs beside the buffer's main server)."
  (when (fboundp 'lsp-register-client)
    (lsp-register-client
     (make-lsp-client
      :new-connection (lsp-stdio-connection
                       (lambda () (lmrs-server-command))
                       ;; No binary: lsp-mode leaves lmrs out (once said why) instead of failing.
                       (lambda ()
                         (or lmrs-server-command
                             (lmrs-find-server)
                             (progn (unless lmrs--missing-reported
                                      (setq lmrs--missing-reported t)
                                      (message "%s" (lmrs--missing-server-message)))
                                    nil))))
      :activation-fn (lambda (&rest _) (not (lmrs--disabled-p)))
      :add-on? t
      :priority -2
      :server-id 'lmrs
      :initialization-options (lambda () (or (lmrs--initialization-options) (make-hash-table)))
      :notification-handlers
      (let ((h (make-hash-table :test #'equal)))
        (puthash "$/progress"
                 (lambda (_workspace params)
                   (lmrs--on-progress (lmrs--get params :token) (lmrs--plist (lmrs--get params :value))))
                 h)
        h)))))

(declare-function lsp-register-client "lsp-mode")
(declare-function make-lsp-client "lsp-mode")
(declare-function lsp-stdio-connection "lsp-mode")
(with-eval-after-load 'lsp-mode (lmrs--lsp-mode-register))

;;;; Talking to the server (eglot or lsp-mode, whichever manages the buffer)

(defun lmrs--get (obj key)
  "KEY (a keyword) of a JSON object OBJ: a plist (eglot) or a hash table (lsp-mode)."
  (cond ((hash-table-p obj) (gethash (substring (symbol-name key) 1) obj))
        ((listp obj) (plist-get obj key))))

(defun lmrs--plist (obj)
  "OBJ as a plist (hash tables converted one level deep)."
  (if (hash-table-p obj)
      (let (pl) (maphash (lambda (k v) (setq pl (append pl (list (intern (concat ":" k)) v)))) obj) pl)
    obj))

(defun lmrs--eglot-server ()
  (and (fboundp 'eglot-current-server) (eglot-current-server)))

(defun lmrs--lsp-active-p ()
  (and (bound-and-true-p lsp-mode) (fboundp 'lsp-find-workspace)
       (lsp-find-workspace 'lmrs nil)))

(declare-function eglot-current-server "eglot")
(declare-function eglot--TextDocumentPositionParams "eglot")
(declare-function eglot--signal-textDocument/didChange "eglot")
(declare-function lsp-find-workspace "lsp-mode")
(declare-function lsp-request-async "lsp-mode")
(declare-function lsp--text-document-position-params "lsp-mode")

(defun lmrs--send (params callback)
  "Send an inlineCompletion request with PARAMS; call CALLBACK with the result.
Returns a function that cancels the request, or nil if no server manages the buffer."
  (let ((server (lmrs--eglot-server)))
    (cond
     (server
      ;; Eglot batches didChange on an idle timer: flush it so the server sees this text.
      (eglot--signal-textDocument/didChange)
      (let* ((params (append (eglot--TextDocumentPositionParams) params))
             (id (car (jsonrpc-async-request
                       server :textDocument/inlineCompletion params
                       :success-fn callback
                       :error-fn (lambda (&rest _) (funcall callback nil))
                       :timeout-fn (lambda () (funcall callback nil))
                       :timeout 30))))
        (lambda () (jsonrpc-notify server :$/cancelRequest (list :id id)))))
     ((lmrs--lsp-active-p)
      ;; lsp-mode sends didChange as it goes; `detached' delivers the answer whatever the user did
      ;; meanwhile (we check staleness ourselves).
      (let ((params (append (lsp--text-document-position-params) params)))
        (lsp-request-async "textDocument/inlineCompletion" params callback
                           :mode 'detached :cancel-token 'lmrs-inline)
        (lambda () (when (fboundp 'lsp-cancel-request-by-token)
                     (lsp-cancel-request-by-token 'lmrs-inline))))))))

(declare-function lsp-cancel-request-by-token "lsp-mode")

;;;; Ghost text

(defvar-local lmrs--overlay nil "The overlay showing the suggestion.")
(defvar-local lmrs--items nil "Suggestions for the current anchor (strings).")
(defvar-local lmrs--index 0 "Which of `lmrs--items' is shown.")
(defvar-local lmrs--tick nil "`buffer-chars-modified-tick' the suggestion belongs to.")
(defvar-local lmrs--cancel nil "Cancels the request in flight.")
(defvar-local lmrs--timer nil)
(defvar-local lmrs--seq 0)
(defvar-local lmrs--active nil "Non-nil while ghost text is shown (enables `lmrs-active-map').")

(defvar lmrs-active-map
  (let ((m (make-sparse-keymap)))
    (define-key m (kbd "TAB") #'lmrs-accept)
    (define-key m (kbd "<tab>") #'lmrs-accept)
    (define-key m (kbd "M-f") #'lmrs-accept-word)
    (define-key m (kbd "M-e") #'lmrs-accept-line)
    (define-key m (kbd "M-n") #'lmrs-next)
    (define-key m (kbd "M-p") #'lmrs-previous)
    (define-key m (kbd "C-g") #'lmrs-dismiss)
    m)
  "Keys active while a suggestion is shown.")

;; `emulation-mode-map-alists' outranks minor-mode maps, so TAB reaches us before e.g. company or
;; the major mode's indent command -- but only while `lmrs--active' is set.
(defvar lmrs--emulation-alist `((lmrs--active . ,lmrs-active-map)))
(add-to-list 'emulation-mode-map-alists 'lmrs--emulation-alist)

(defun lmrs-visible-p ()
  "Non-nil when a suggestion is shown in this buffer."
  (and lmrs--overlay (overlay-buffer lmrs--overlay) t))

(defun lmrs-current ()
  "The suggestion shown, or nil."
  (and (lmrs-visible-p) (nth lmrs--index lmrs--items)))

(defun lmrs--clear ()
  (when lmrs--overlay (delete-overlay lmrs--overlay))
  (setq lmrs--overlay nil lmrs--items nil lmrs--index 0 lmrs--active nil))

(defun lmrs--show (items &optional index)
  "Show ITEMS (strings) at point, the INDEXth first."
  (lmrs--clear)
  (when items
    (setq lmrs--items items lmrs--index (or index 0) lmrs--tick (buffer-chars-modified-tick))
    (let* ((text (nth lmrs--index items))
           (s (concat (propertize text 'face 'lmrs-ghost-face)
                      (if (cdr items)
                          (propertize (format " (%d/%d)" (1+ lmrs--index) (length items))
                                      'face 'lmrs-ghost-face)
                        "")))
           (ov (make-overlay (point) (point) nil nil nil)))
      ;; An empty overlay's after-string is drawn at point; the `cursor' property keeps the
      ;; cursor before the ghost text instead of after it.
      (put-text-property 0 1 'cursor t s)
      (overlay-put ov 'after-string s)
      (overlay-put ov 'priority 100)
      (overlay-put ov 'lmrs t)
      (setq lmrs--overlay ov lmrs--active t))))

(defun lmrs--disabled-p ()
  (or buffer-read-only (minibufferp)
      (cl-some (lambda (m) (derived-mode-p m)) lmrs-disabled-modes)))

(defun lmrs--cancel-pending ()
  (when lmrs--cancel
    (ignore-errors (funcall lmrs--cancel))
    (setq lmrs--cancel nil)
    (when (eq lmrs-status 'busy) (lmrs--set-status 'ready))))

(defun lmrs--items-of (result)
  "Suggestion strings from an inlineCompletion RESULT (a list or an array of items)."
  (let* ((items (if (and (or (listp result) (hash-table-p result)) (lmrs--get result :items))
                    (lmrs--get result :items)
                  result))
         out)
    (mapc (lambda (item)
            (let ((text (lmrs--get item :insertText)))
              (unless (stringp text) (setq text (lmrs--get text :value))) ; StringValue
              (when (and (stringp text) (not (string-empty-p text)))
                (push text out))))
          (if (vectorp items) items (and (listp items) items)))
    (nreverse out)))

(defun lmrs-complete (&optional invoked)
  "Ask for a suggestion at point.  Interactively (INVOKED), also ask for alternatives."
  (interactive (list t))
  (lmrs--cancel-pending)
  (unless (lmrs--disabled-p)
    (let* ((buf (current-buffer))
           (seq (cl-incf lmrs--seq))
           (pt (point))
           (tick (buffer-chars-modified-tick))
           (cancel
            (lmrs--send
             (list :context (list :triggerKind (if invoked 1 2)))
             (lambda (result)
               (when (buffer-live-p buf)
                 (with-current-buffer buf
                   (when (= seq lmrs--seq)
                     (setq lmrs--cancel nil)
                     (when (eq lmrs-status 'busy) (lmrs--set-status 'ready))
                     ;; Drop a stale answer: the user typed or moved meanwhile.
                     (when (and (eq (window-buffer (selected-window)) buf)
                                (= (point) pt) (= (buffer-chars-modified-tick) tick))
                       (lmrs--show (lmrs--items-of result))))))))))
      (when cancel
        (setq lmrs--cancel cancel)
        (when (memq lmrs-status '(ready off)) (lmrs--set-status 'busy))))))

(defun lmrs--schedule ()
  (when lmrs--timer (cancel-timer lmrs--timer))
  ;; A plain timer, not an idle timer: it also fires while a batch test waits for output.
  (setq lmrs--timer
        (run-with-timer lmrs-delay nil
                        (let ((buf (current-buffer)))
                          (lambda ()
                            (when (buffer-live-p buf)
                              (with-current-buffer buf
                                (setq lmrs--timer nil)
                                (when (and lmrs-mode (eq (current-buffer) (window-buffer (selected-window))))
                                  (lmrs-complete)))))))))

(defvar-local lmrs--last-point nil)

(defun lmrs--post-command ()
  "Keep, shrink or drop the suggestion after each command; request a new one after edits."
  (let ((tick (buffer-chars-modified-tick))
        (moved (not (eql (point) lmrs--last-point))))
    (setq lmrs--last-point (point))
    (cond
     ((memq this-command '(lmrs-accept lmrs-accept-word lmrs-accept-line lmrs-next lmrs-previous
                                       lmrs-complete lmrs-dismiss)))
     ((and (lmrs-visible-p) (eql tick lmrs--tick) (not moved)))
     ;; Typed exactly the next characters of the suggestion: shrink it ("typing through").
     ((and (lmrs-visible-p) (not (eql tick lmrs--tick))
           (let* ((start (overlay-start lmrs--overlay))
                  (text (lmrs-current))
                  (typed (and (> (point) start) (<= (- (point) start) (length text))
                              (buffer-substring-no-properties start (point)))))
             (when (and typed (string-prefix-p typed text) (< (length typed) (length text)))
               (lmrs--show (list (substring text (length typed))))
               t))))
     ((not (eql tick lmrs--tick))
      (lmrs--clear)
      (setq lmrs--tick tick)
      (lmrs--schedule))
     (moved (lmrs--clear) (lmrs--cancel-pending)))))

;;;; Commands

(defun lmrs--accept-part (n)
  "Insert the first N characters of the suggestion; keep the rest shown."
  (let* ((text (lmrs-current))
         (start (overlay-start lmrs--overlay))
         (part (substring text 0 n))
         (rest (substring text n)))
    (lmrs--clear)
    (goto-char start)
    (insert part)
    (setq lmrs--last-point (point))
    (if (string-empty-p rest)
        (lmrs--schedule) ; ask what comes next
      (lmrs--show (list rest)))))

(defun lmrs-accept ()
  "Insert the suggestion."
  (interactive)
  (when (lmrs-visible-p) (lmrs--accept-part (length (lmrs-current)))))

(defun lmrs-accept-word ()
  "Insert the suggestion up to the end of its next word."
  (interactive)
  (when (lmrs-visible-p)
    (let ((text (lmrs-current)))
      (lmrs--accept-part
       (if (string-match "\\`\\s-*\\(?:\\w\\|_\\)+\\|\\`\\s-*[^[:space:]]" text)
           (match-end 0)
         (length text))))))

(defun lmrs-accept-line ()
  "Insert the suggestion up to the end of its (first non-empty) line."
  (interactive)
  (when (lmrs-visible-p)
    (let* ((text (lmrs-current))
           (nl (string-match "\n" text 1)))
      (lmrs--accept-part (or nl (length text))))))

(defun lmrs-dismiss ()
  "Hide the suggestion."
  (interactive)
  (lmrs--cancel-pending)
  (lmrs--clear))

(defun lmrs-next (&optional step)
  "Show the next alternative (STEP -1: the previous); ask for alternatives if there are none."
  (interactive)
  (if (and (lmrs-visible-p) (cdr lmrs--items))
      (let ((items lmrs--items))
        (lmrs--show items (mod (+ lmrs--index (or step 1)) (length items))))
    (lmrs-complete t)))

(defun lmrs-previous ()
  "Show the previous alternative."
  (interactive)
  (lmrs-next -1))

(defun lmrs-status ()
  "Tell whether the model is loaded."
  (interactive)
  (message "lmrs: %s %s" lmrs-status lmrs-status-message))

(defun lmrs--lighter ()
  (if (eq lmrs-status 'off) " lmrs" (format " lmrs[%s]" lmrs-status)))

;;;###autoload
(define-minor-mode lmrs-mode
  "Ghost-text code suggestions from the lmrs language server (through eglot or lsp-mode)."
  :lighter (:eval (lmrs--lighter))
  (if lmrs-mode
      (progn
        (setq lmrs--last-point (point) lmrs--tick (buffer-chars-modified-tick))
        (add-hook 'post-command-hook #'lmrs--post-command nil t))
    (remove-hook 'post-command-hook #'lmrs--post-command t)
    (lmrs-dismiss)))

(provide 'lmrs)
;;; lmrs.el ends here
