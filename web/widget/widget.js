/*! parley web widget: one dependency-free script (ES2020, one IIFE, no build step).
 * Install: <script src="https://HOST/widget.js" data-widget-id="…" async></script>
 * Optional: data-mode="embedded" data-target="#chat", data-locale="de".
 * Page API: parley.open() close() toggle() send(text) setUser({id,name,email,hash}) reset()
 * on('message'|'open'|'close', fn).
 * Safe on any page: everything lives in a Shadow DOM, the DOM is built with createElement
 * and textContent only (message text never reaches innerHTML), no inline styles or scripts,
 * so a strict Content-Security-Policy that allows only the parley host is enough. */
(() => {
  'use strict';

  // Our own <script> element: currentScript while this runs (also for async scripts),
  // else the first widget tag not yet taken (a page may embed the widget twice).
  const script =
    document.currentScript ||
    [...document.querySelectorAll('script[data-widget-id][src$="/widget.js"]')].find(
      (s) => !s.dataset.parleyLoaded
    );
  if (!script || script.dataset.parleyLoaded) return;
  script.dataset.parleyLoaded = '1';

  const HOST = new URL(script.src, location.href).origin;
  const WID = script.dataset.widgetId || '';
  const API = `${HOST}/widget/v1/${encodeURIComponent(WID)}`;
  const KEY = `parley:${WID}:`; // localStorage keys: token, speak; sessionStorage: open
  // The tag's data-mode wins over the config's default mode (known once it is loaded).
  let embedded = script.dataset.mode === 'embedded';
  const RTL_LOCALES = ['ar', 'he', 'fa', 'ur'];
  const SVG = 'http://www.w3.org/2000/svg';

  // UI strings. {n} is replaced by a number.
  const STRINGS = {
    en: {
      open: 'Open chat', close: 'Close chat', ph: 'Write a message…', send: 'Send',
      attach: 'Attach a file', remove: 'Remove attachment', mic: 'Record a voice message',
      stop: 'Stop recording', speak: 'Read answers aloud', typing: 'Typing…', op: 'Operator',
      ended: 'This conversation has ended.', again: 'Start a new conversation',
      nosite: 'Chat is not available on this site.',
      down: 'Chat is not available right now. Please try again later.',
      failed: 'Not sent.', retry: 'Retry', wait: 'Too many messages. Sending again in {n} s…',
      big: 'The file is too large (at most {n}).', unread: '{n} new messages',
      offline: 'Connection lost. Reconnecting…', log: 'Conversation', you: 'You',
    },
    de: {
      open: 'Chat öffnen', close: 'Chat schließen', ph: 'Nachricht schreiben…', send: 'Senden',
      attach: 'Datei anhängen', remove: 'Anhang entfernen', mic: 'Sprachnachricht aufnehmen',
      stop: 'Aufnahme beenden', speak: 'Antworten vorlesen', typing: 'Schreibt…', op: 'Mitarbeiter',
      ended: 'Dieses Gespräch ist beendet.', again: 'Neues Gespräch beginnen',
      nosite: 'Der Chat ist auf dieser Website nicht verfügbar.',
      down: 'Der Chat ist gerade nicht verfügbar. Bitte versuchen Sie es später erneut.',
      failed: 'Nicht gesendet.', retry: 'Erneut senden',
      wait: 'Zu viele Nachrichten. Neuer Versuch in {n} s…',
      big: 'Die Datei ist zu groß (höchstens {n}).', unread: '{n} neue Nachrichten',
      offline: 'Verbindung unterbrochen. Verbinde neu…', log: 'Gespräch', you: 'Sie',
    },
    fr: {
      open: 'Ouvrir le chat', close: 'Fermer le chat', ph: 'Écrivez un message…', send: 'Envoyer',
      attach: 'Joindre un fichier', remove: 'Retirer la pièce jointe',
      mic: 'Enregistrer un message vocal', stop: "Arrêter l'enregistrement",
      speak: 'Lire les réponses à voix haute', typing: 'Écrit…', op: 'Conseiller',
      ended: 'Cette conversation est terminée.', again: 'Commencer une nouvelle conversation',
      nosite: "Le chat n'est pas disponible sur ce site.",
      down: "Le chat n'est pas disponible pour le moment. Veuillez réessayer plus tard.",
      failed: 'Non envoyé.', retry: 'Réessayer', wait: 'Trop de messages. Nouvel envoi dans {n} s…',
      big: 'Le fichier est trop volumineux ({n} au maximum).', unread: '{n} nouveaux messages',
      offline: 'Connexion perdue. Reconnexion…', log: 'Conversation', you: 'Vous',
    },
    es: {
      open: 'Abrir el chat', close: 'Cerrar el chat', ph: 'Escribe un mensaje…', send: 'Enviar',
      attach: 'Adjuntar un archivo', remove: 'Quitar el adjunto', mic: 'Grabar un mensaje de voz',
      stop: 'Detener la grabación', speak: 'Leer las respuestas en voz alta', typing: 'Escribiendo…',
      op: 'Agente', ended: 'Esta conversación ha terminado.', again: 'Empezar una nueva conversación',
      nosite: 'El chat no está disponible en este sitio.',
      down: 'El chat no está disponible ahora. Inténtalo de nuevo más tarde.',
      failed: 'No enviado.', retry: 'Reintentar', wait: 'Demasiados mensajes. Reenviando en {n} s…',
      big: 'El archivo es demasiado grande (máximo {n}).', unread: '{n} mensajes nuevos',
      offline: 'Conexión perdida. Reconectando…', log: 'Conversación', you: 'Tú',
    },
    ru: {
      open: 'Открыть чат', close: 'Закрыть чат', ph: 'Напишите сообщение…', send: 'Отправить',
      attach: 'Прикрепить файл', remove: 'Убрать вложение', mic: 'Записать голосовое сообщение',
      stop: 'Остановить запись', speak: 'Зачитывать ответы', typing: 'Печатает…', op: 'Оператор',
      ended: 'Разговор завершён.', again: 'Начать новый разговор',
      nosite: 'Чат недоступен на этом сайте.',
      down: 'Чат сейчас недоступен. Попробуйте позже.',
      failed: 'Не отправлено.', retry: 'Повторить',
      wait: 'Слишком много сообщений. Повторная отправка через {n} с…',
      big: 'Файл слишком большой (не более {n}).', unread: 'Новых сообщений: {n}',
      offline: 'Соединение потеряно. Переподключение…', log: 'Разговор', you: 'Вы',
    },
    zh: {
      open: '打开聊天', close: '关闭聊天', ph: '输入消息…', send: '发送', attach: '添加附件',
      remove: '移除附件', mic: '录制语音消息', stop: '停止录音', speak: '朗读回答',
      typing: '正在输入…', op: '人工客服', ended: '本次对话已结束。', again: '开始新的对话',
      nosite: '此网站无法使用聊天。', down: '聊天暂时不可用，请稍后再试。',
      failed: '未发送。', retry: '重试', wait: '消息过多，{n} 秒后重新发送…',
      big: '文件过大（最大 {n}）。', unread: '{n} 条新消息',
      offline: '连接已断开，正在重新连接…', log: '对话', you: '你',
    },
    ar: {
      open: 'افتح المحادثة', close: 'أغلق المحادثة', ph: 'اكتب رسالة…', send: 'إرسال',
      attach: 'إرفاق ملف', remove: 'إزالة المرفق', mic: 'تسجيل رسالة صوتية', stop: 'إيقاف التسجيل',
      speak: 'قراءة الردود بصوت عالٍ', typing: 'يكتب…', op: 'موظف الدعم',
      ended: 'انتهت هذه المحادثة.', again: 'ابدأ محادثة جديدة',
      nosite: 'المحادثة غير متاحة على هذا الموقع.',
      down: 'المحادثة غير متاحة حاليًا. يرجى المحاولة لاحقًا.',
      failed: 'لم تُرسل.', retry: 'إعادة المحاولة',
      wait: 'رسائل كثيرة جدًا. ستُعاد المحاولة خلال {n} ث…',
      big: 'الملف كبير جدًا (الحد الأقصى {n}).', unread: '{n} رسائل جديدة',
      offline: 'انقطع الاتصال. جارٍ إعادة الاتصال…', log: 'المحادثة', you: 'أنت',
    },
    he: {
      open: "פתיחת הצ'אט", close: "סגירת הצ'אט", ph: 'כתבו הודעה…', send: 'שליחה',
      attach: 'צירוף קובץ', remove: 'הסרת הקובץ', mic: 'הקלטת הודעה קולית', stop: 'עצירת ההקלטה',
      speak: 'הקראת התשובות', typing: 'מקליד…', op: 'נציג', ended: 'השיחה הסתיימה.',
      again: 'התחלת שיחה חדשה', nosite: "הצ'אט אינו זמין באתר זה.",
      down: "הצ'אט אינו זמין כרגע. נסו שוב מאוחר יותר.", failed: 'לא נשלח.', retry: 'ניסיון חוזר',
      wait: 'יותר מדי הודעות. שליחה חוזרת בעוד {n} שנ׳…',
      big: 'הקובץ גדול מדי (עד {n}).', unread: '{n} הודעות חדשות',
      offline: 'החיבור נותק. מתחבר מחדש…', log: 'שיחה', you: 'את/ה',
    },
  };

  // ---------------------------------------------------------------------------------
  // DOM helpers (no innerHTML anywhere)

  /** An element with attributes (`on…` are listeners) and children (strings become text). */
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : v);
    }
    e.append(...kids.filter((k) => k != null));
    return e;
  }

  const ICONS = {
    chat: 'M21 12a8 8 0 0 1-11.6 7.1L4 20l1-4.6A8 8 0 1 1 21 12z',
    close: 'M6 6l12 12M18 6 6 18',
    send: 'M22 2 11 13M22 2l-7 20-4-9-9-4z',
    clip: 'M21.4 11 12.3 20.2a6 6 0 0 1-8.5-8.5L13 2.5a4 4 0 0 1 5.7 5.7l-9.2 9.2a2 2 0 0 1-2.8-2.8l8.5-8.5',
    mic: 'M12 2a3 3 0 0 0-3 3v7a3 3 0 0 0 6 0V5a3 3 0 0 0-3-3zM19 10v2a7 7 0 0 1-14 0v-2M12 19v4M8 23h8',
    stop: 'M7 7h10v10H7z',
    speak: 'M11 5 6 9H2v6h4l5 4zM19 5a10 10 0 0 1 0 14M15.5 8.5a5 5 0 0 1 0 7',
  };

  function icon(name) {
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('aria-hidden', 'true');
    svg.setAttribute('focusable', 'false');
    const path = document.createElementNS(SVG, 'path');
    path.setAttribute('d', ICONS[name]);
    svg.append(path);
    return svg;
  }

  // ---------------------------------------------------------------------------------
  // Markdown subset -> DOM nodes: paragraphs, line breaks, lists, code blocks, inline code,
  // bold, italic, links (http, https and mailto only). Anything else stays plain text.

  const FENCE = /^\s*```/;
  const LIST = /^\s*(?:[-*+]|\d{1,9}[.)])\s+/;
  const ORDERED = /^\s*(\d{1,9})[.)]\s/;
  const INLINE =
    /`([^`\n]+)`|\[([^\]\n]+)\]\(([^)\s]+)\)|(https?:\/\/[^\s<>()]*[^\s<>().,;:!?'"*_])|\*\*(.+?)\*\*|__(.+?)__|\*(?=\S)(.+?)\*|\b_(?=\S)(.+?)_\b/g;

  function markdown(text) {
    const out = document.createDocumentFragment();
    const lines = String(text).replace(/\r\n?/g, '\n').split('\n');
    for (let i = 0; i < lines.length; ) {
      const line = lines[i];
      if (FENCE.test(line)) {
        const code = [];
        // An unclosed fence (an answer still streaming) runs to the end.
        for (i++; i < lines.length && !FENCE.test(lines[i]); i++) code.push(lines[i]);
        i++;
        out.append(el('pre', { dir: 'ltr' }, el('code', null, code.join('\n'))));
      } else if (LIST.test(line)) {
        const first = ORDERED.exec(line);
        const list = el(first ? 'ol' : 'ul', first && first[1] !== '1' ? { start: first[1] } : null);
        for (; i < lines.length && LIST.test(lines[i]) && !!ORDERED.test(lines[i]) === !!first; i++) {
          list.append(el('li', null, inline(lines[i].replace(LIST, ''))));
        }
        out.append(list);
      } else if (!line.trim()) {
        i++;
      } else {
        const p = el('p');
        for (let n = 0; i < lines.length && lines[i].trim() && !FENCE.test(lines[i]) && !LIST.test(lines[i]); i++, n++) {
          if (n) p.append(el('br'));
          p.append(inline(lines[i]));
        }
        out.append(p);
      }
    }
    return out;
  }

  function inline(s) {
    const out = document.createDocumentFragment();
    let last = 0;
    // matchAll works on a copy of the regex, so the recursion below is safe.
    for (const m of s.matchAll(INLINE)) {
      out.append(s.slice(last, m.index));
      last = m.index + m[0].length;
      if (m[1] != null) out.append(el('code', null, m[1]));
      else if (m[2] != null) out.append(link(m[3], inline(m[2])) || m[0]);
      else if (m[4] != null) out.append(link(m[4], m[4]) || m[4]);
      else if (m[5] != null || m[6] != null) out.append(el('strong', null, inline(m[5] ?? m[6])));
      else out.append(el('em', null, inline(m[7] ?? m[8])));
    }
    out.append(s.slice(last));
    return out;
  }

  /** A link that opens in a new tab without giving it our window; null for other schemes. */
  function link(href, content) {
    let url;
    try {
      url = new URL(href);
    } catch {
      return null;
    }
    if (!['http:', 'https:', 'mailto:'].includes(url.protocol)) return null;
    return el('a', { href: url.href, target: '_blank', rel: 'noopener noreferrer' }, content);
  }

  // ---------------------------------------------------------------------------------
  // Small utilities

  const store = (area, k, v) => {
    // Storage can be missing or throw (private modes, sandboxed frames): the widget then
    // works for this page view only.
    try {
      const s = window[area];
      if (v === undefined) return s.getItem(KEY + k);
      if (v === null) s.removeItem(KEY + k);
      else s.setItem(KEY + k, v);
    } catch {
      /* no storage */
    }
    return null;
  };

  const randomKey = () =>
    [...crypto.getRandomValues(new Uint8Array(16))].map((b) => b.toString(16).padStart(2, '0')).join('');

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  const COLOR = /^(#[0-9a-f]{3,8}|(rgb|hsl)a?\([\d\s.,%/]+\))$/i;

  function fmtSize(n) {
    return n >= 1048576 ? `${+(n / 1048576).toFixed(1)} MB` : `${Math.ceil(n / 1024)} KB`;
  }

  /** A failed API call: HTTP status (0 for network errors), error code, Retry-After. */
  class ApiError extends Error {
    constructor(status, body, retry) {
      super((body && body.error && body.error.message) || `HTTP ${status}`);
      this.status = status;
      this.code = body && body.error && body.error.code;
      this.retry = retry;
    }
  }

  // ---------------------------------------------------------------------------------
  // The widget

  let cfg = null; // the widget's public config
  let t = (k, n) => (STRINGS.en[k] || k).replace('{n}', n); // replaced once the locale is known
  let locale = 'en';
  let token = store('localStorage', 'token');
  let user = null; // setUser() identity, sent with the next visitor call
  let conv = null; // {session_id, status, mode}
  let ws = null;
  let wsTries = 0;
  let wsTimer = 0;
  let syncedId = 0; // every message up to this id has been seen (history, sync, socket)
  let stream = null; // the AI bubble being streamed
  let isOpen = false;
  let unread = 0;
  let speakOn = store('localStorage', 'speak') === '1';
  let visiting = null; // in-flight visitor call
  let creating = null; // in-flight new conversation
  let draft = []; // files chosen for the next message
  let recorder = null;
  const byId = new Map(); // message id -> bubble
  const outbox = []; // visitor messages not yet confirmed: {key, text, files, row, id}
  const handlers = { message: [], open: [], close: [] };
  let ui = null; // the built DOM parts

  const emit = (type, data) => {
    for (const fn of handlers[type]) {
      try {
        fn(data);
      } catch (e) {
        console.error(e); // a page's handler must not break the widget
      }
    }
  };

  async function call(method, path, { json, form, key } = {}) {
    const headers = {};
    if (token) headers.authorization = `Bearer ${token}`;
    if (key) headers['idempotency-key'] = key;
    if (json) headers['content-type'] = 'application/json';
    let r;
    try {
      r = await fetch(API + path, {
        method,
        headers,
        body: form || (json && JSON.stringify(json)),
        credentials: 'omit',
      });
    } catch {
      throw new ApiError(0, null, 0);
    }
    const body = await r.json().catch(() => null);
    if (!r.ok) throw new ApiError(r.status, body, +r.headers.get('retry-after') || 0);
    return body;
  }

  // ---------------------------------------------------------------------------------
  // Building the UI

  if (!customElements.get('parley-chat')) customElements.define('parley-chat', class extends HTMLElement {});
  const host = document.createElement('parley-chat');
  const root = host.attachShadow({ mode: 'open' });
  // Hidden until our stylesheet arrives, so the page never flashes unstyled controls.
  host.style.setProperty('visibility', 'hidden');
  const css = el('link', { rel: 'stylesheet', href: `${HOST}/widget.css` });
  css.addEventListener('load', () => host.style.removeProperty('visibility'));
  root.append(css);

  function build() {
    const c = cfg || {};
    locale = [script.dataset.locale, c.locale, navigator.language]
      .map((l) => String(l || '').toLowerCase().split(/[-_]/)[0])
      .find((l) => STRINGS[l]) || 'en';
    const strings = STRINGS[locale];
    t = (k, n) => (strings[k] || STRINGS.en[k]).replace('{n}', n);
    if (!script.dataset.mode && c.mode === 'embedded') embedded = true;
    host.dataset.mode = embedded ? 'embedded' : 'floating';
    const rtl = c.rtl === 'on' || (c.rtl !== 'off' && RTL_LOCALES.includes(locale));
    for (const [k, prop] of [['primary', 'primary'], ['on_primary', 'on-primary'], ['background', 'bg'], ['text', 'text']]) {
      const v = c.colors && c.colors[k];
      if (COLOR.test(v || '')) host.style.setProperty(`--pw-${prop}`, v);
    }

    const title = c.title || c.agent_name || 'Chat';
    const label = c.launcher_label || t('open');
    const u = {};
    u.badge = el('span', { class: 'badge', 'aria-hidden': 'true', hidden: true });
    u.launcher = embedded
      ? null
      : el('button', { class: 'launcher', type: 'button', 'aria-label': label, 'aria-expanded': 'false', 'aria-controls': 'pw-panel', title: label, onclick: () => setOpen(!isOpen) }, icon('chat'), icon('close'), u.badge);
    u.label = label;

    const initials = title.split(/\s+/).slice(0, 2).map((w) => w[0]).join('').toUpperCase();
    const avatar = el('span', { class: 'avatar', 'aria-hidden': 'true' }, initials);
    if (/^https?:\/\//.test(c.avatar_url || '')) {
      const img = el('img', { src: c.avatar_url, alt: '' });
      img.addEventListener('error', () => img.remove()); // the initials show instead
      avatar.append(img);
    }
    u.speak = 'speechSynthesis' in window
      ? el('button', { class: 'icon', type: 'button', 'aria-label': t('speak'), title: t('speak'), 'aria-pressed': String(speakOn), onclick: toggleSpeak }, icon('speak'))
      : null;
    const closeBtn = embedded ? null : el('button', { class: 'icon', type: 'button', 'aria-label': t('close'), title: t('close'), onclick: () => setOpen(false) }, icon('close'));
    const header = el('header', null, avatar,
      el('div', { class: 'titles' }, el('h2', { id: 'pw-title' }, title), c.subtitle ? el('p', null, c.subtitle) : null),
      u.speak, closeBtn);

    u.log = el('div', { class: 'log', role: 'log', 'aria-live': 'polite', 'aria-label': t('log'), tabindex: '0' });
    u.typing = el('div', { class: 'row ai typing', hidden: true },
      el('div', { class: 'bubble', role: 'status', 'aria-label': t('typing') }, el('i'), el('i'), el('i')));
    u.log.append(u.typing);
    u.status = el('div', { class: 'status', role: 'status' });

    u.input = el('textarea', { rows: '1', placeholder: c.placeholder || t('ph'), 'aria-label': c.placeholder || t('ph'), maxlength: '4000' });
    u.input.addEventListener('input', () => { autosize(); canSend(); });
    u.input.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        submit();
      }
    });
    u.file = el('input', { type: 'file', hidden: true, multiple: true, tabindex: '-1', 'aria-hidden': 'true' });
    u.file.addEventListener('change', () => {
      addFiles([...u.file.files]);
      u.file.value = '';
    });
    const att = c.attachments || {};
    u.attach = att.enabled === false ? null : el('button', { class: 'icon', type: 'button', 'aria-label': t('attach'), title: t('attach'), onclick: () => u.file.click() }, icon('clip'));
    u.mic = c.voice && c.voice.enabled && window.MediaRecorder && navigator.mediaDevices
      ? el('button', { class: 'icon', type: 'button', 'aria-label': t('mic'), title: t('mic'), 'aria-pressed': 'false', onclick: toggleRecording }, icon('mic'))
      : null;
    u.send = el('button', { class: 'send', type: 'submit', 'aria-label': t('send'), title: t('send'), disabled: true }, icon('send'));
    u.previews = el('div', { class: 'previews', hidden: true });
    u.composer = el('form', { class: 'composer', onsubmit: (e) => { e.preventDefault(); submit(); } },
      u.previews, el('div', { class: 'bar' }, u.attach, u.file, u.input, u.mic, u.send));

    u.panel = el('section', { class: 'panel', id: 'pw-panel', role: embedded ? 'region' : 'dialog', 'aria-labelledby': 'pw-title', hidden: !embedded },
      header, u.log, u.status, u.composer);
    const wrap = el('div', { class: 'pw', dir: rtl ? 'rtl' : 'ltr', lang: locale, 'data-mode': host.dataset.mode, 'data-pos': c.position === 'left' ? 'left' : 'right' },
      u.panel, u.launcher);
    wrap.addEventListener('keydown', (e) => {
      if (e.key === 'Escape' && !embedded && isOpen) {
        e.stopPropagation();
        setOpen(false);
      }
    });
    root.append(wrap);
    ui = u;

    let target = null;
    try {
      target = embedded && document.querySelector(script.dataset.target || '#chat');
    } catch {
      /* not a selector */
    }
    if (embedded && !target) console.warn('parley widget: data-target matches nothing; the chat goes at the end of the page.');
    (target || document.body).append(host);
  }

  function autosize() {
    const i = ui.input;
    i.style.height = 'auto';
    i.style.height = `${Math.min(i.scrollHeight, 140)}px`;
  }

  function canSend() {
    ui.send.disabled = !(ui.input.value.trim() || draft.length) || ui.composer.classList.contains('waiting');
  }

  let statusTimer = 0;
  /** The line above the composer (connection, waiting, a refused file); `brief` ones fade. */
  function setStatus(text, brief) {
    clearTimeout(statusTimer);
    ui.status.textContent = text || '';
    statusTimer = brief ? setTimeout(() => setStatus(''), 6000) : 0;
  }

  /** A notice card in the conversation (not available, conversation ended). */
  function notice(text, action) {
    const old = ui.log.querySelector('.notice');
    if (old) old.remove();
    if (!text) return null;
    const n = el('div', { class: 'notice' }, el('p', null, text), action || null);
    ui.log.insertBefore(n, ui.typing);
    return n;
  }

  function setOpen(v, focus = true) {
    v = embedded || !!v;
    if (v === isOpen || !ui) return;
    isOpen = v;
    const inside = root.activeElement; // before hiding the panel moves focus away
    if (!embedded) {
      ui.panel.hidden = !v;
      ui.launcher.setAttribute('aria-expanded', String(v));
      ui.launcher.classList.toggle('on', v);
      store('sessionStorage', 'open', v ? '1' : null);
    }
    if (v) {
      unread = 0;
      badge();
      scrollDown(true);
      if (cfg) ensureConversation().catch(failed);
      if (focus) (ui.log.querySelector('.notice button') || ui.input).focus();
      emit('open');
    } else {
      // Give focus back to the launcher only when it was inside the widget.
      if (focus && inside) ui.launcher.focus();
      emit('close');
    }
  }

  function badge() {
    if (!ui.launcher) return;
    ui.badge.hidden = !unread;
    ui.badge.textContent = unread > 99 ? '99+' : String(unread);
    ui.launcher.setAttribute('aria-label', unread ? `${ui.label} (${t('unread', unread)})` : ui.label);
  }

  function scrollDown(force) {
    const l = ui.log;
    // Follow new content only when the visitor is already at the bottom.
    if (force || l.scrollHeight - l.scrollTop - l.clientHeight < 80) {
      requestAnimationFrame(() => (l.scrollTop = l.scrollHeight));
    }
  }

  // ---------------------------------------------------------------------------------
  // Messages

  const timeFmt = () => new Intl.DateTimeFormat(locale, { hour: 'numeric', minute: '2-digit' });

  /** An empty message row for `role` (HUMAN, AI, OPERATOR). */
  function row(role) {
    const kind = role === 'HUMAN' ? 'me' : role === 'OPERATOR' ? 'op' : 'ai';
    const r = el('div', { class: `row ${kind}` });
    if (kind === 'op') r.append(el('div', { class: 'who' }, t('op')));
    r.append(el('div', { class: 'bubble', dir: 'auto' }), el('div', { class: 'meta' }));
    return r;
  }

  /** Puts a message's text, attachments and time into its row. */
  function fill(r, m, localFiles) {
    const b = r.querySelector('.bubble');
    b.replaceChildren(markdown(m.text || ''));
    for (const a of m.attachments || []) b.append(attachment(absolute(a.url), a.filename, a.content_type, a.size));
    for (const f of localFiles || []) b.append(attachment(f.preview, f.file.name, f.file.type, f.file.size));
    const when = m.timestamp ? new Date(m.timestamp) : new Date();
    const meta = r.querySelector('.meta');
    meta.replaceChildren(el('time', { datetime: when.toISOString() }, timeFmt().format(when)));
    if (m.id != null) r.dataset.id = m.id;
  }

  /** Attachment links may come relative to the parley host. */
  function absolute(url) {
    try {
      return new URL(url, HOST).href;
    } catch {
      return null;
    }
  }

  function attachment(url, name, type, size) {
    const safe = /^(https?:|data:image\/)/.test(url || '') ? url : null;
    if (safe && /^image\//.test(type || '')) {
      const img = el('img', { src: safe, alt: name || '', loading: 'lazy' });
      img.addEventListener('load', () => scrollDown());
      return safe.startsWith('data:') ? el('span', { class: 'file image' }, img) : el('a', { class: 'file image', href: safe, target: '_blank', rel: 'noopener noreferrer' }, img);
    }
    if (safe && /^audio\//.test(type || '') && !safe.startsWith('data:')) {
      return el('audio', { class: 'file', controls: true, preload: 'none', src: safe });
    }
    const label = `${name || 'file'} · ${fmtSize(size || 0)}`;
    return safe && !safe.startsWith('data:')
      ? el('a', { class: 'file', href: safe, target: '_blank', rel: 'noopener noreferrer', download: name || true }, label)
      : el('span', { class: 'file' }, label);
  }

  /** Inserts a new row in id order; rows without an id (sending, streaming) stay last. */
  function place(r, id) {
    const next = id == null ? null : [...ui.log.querySelectorAll('.row:not(.typing)')].find((x) => !x.dataset.id || +x.dataset.id > id);
    ui.log.insertBefore(r, next || ui.log.querySelector('.notice') || ui.typing);
  }

  /** Shows a committed message once, whatever path it came by (history, socket, sync). */
  function add(m, live) {
    if (m.id != null) syncedId = Math.max(syncedId, m.id);
    if (m.id != null && byId.has(m.id)) return;
    let r = null;
    if (m.role === 'AI' && stream) {
      r = stream; // the streamed bubble becomes the committed message
      stream = null;
    } else if (m.role === 'HUMAN') {
      const o = outbox.find((x) => x.id === m.id) || outbox.find((x) => x.id == null && x.text === (m.text || ''));
      if (o) {
        o.id = m.id;
        r = o.row;
      }
    }
    if (!r) {
      if (m.role !== 'HUMAN' && m.role !== 'AI' && m.role !== 'OPERATOR') return;
      if (!m.text && !(m.attachments || []).length) return; // e.g. the silent AI during a handoff
      r = row(m.role);
      place(r, m.id);
    }
    r.classList.remove('sending', 'failed', 'streaming');
    fill(r, m);
    if (m.id != null) byId.set(m.id, r);
    if (m.role !== 'HUMAN') typing(false);
    scrollDown(m.role === 'HUMAN');
    if (live) {
      if (m.role !== 'HUMAN') {
        if (!isOpen) {
          unread++;
          badge();
        }
        if (speakOn) speak(r.querySelector('.bubble').textContent);
      }
      emit('message', { id: m.id, role: m.role, text: m.text, timestamp: m.timestamp, attachments: m.attachments || [] });
    }
  }

  function onDelta(text) {
    typing(false);
    if (!stream) {
      stream = row('AI');
      stream.classList.add('streaming');
      stream._text = '';
      place(stream, null);
    }
    stream._text += text;
    fill(stream, { text: stream._text });
    scrollDown();
  }

  function typing(on) {
    ui.typing.hidden = !on;
    if (on) {
      ui.log.append(ui.typing); // always last
      scrollDown(true);
    }
  }

  /** Clears the conversation view (a new conversation, another visitor). */
  function clearLog() {
    for (const r of ui.log.querySelectorAll('.row:not(.typing), .notice')) r.remove();
    byId.clear();
    outbox.length = 0;
    stream = null;
    syncedId = 0;
    typing(false);
  }

  function showConversation(c) {
    clearLog();
    conv = { session_id: c.session_id, status: c.status, mode: c.mode };
    merge(c, false);
  }

  /** Takes a conversation (or the part after `syncedId`) from the server. */
  function merge(c, live) {
    for (const m of c.messages || []) add(m, live);
    conv.mode = c.mode || conv.mode;
    if (c.status === 'closed') ended();
  }

  function ended() {
    conv.status = 'closed';
    closeSocket();
    typing(false);
    if (stream) stream.remove();
    stream = null;
    ui.composer.hidden = true;
    setStatus('');
    const btn = el('button', { class: 'primary', type: 'button', onclick: () => newConversation().catch(failed) }, t('again'));
    notice(t('ended'), btn);
    scrollDown(true);
    if (isOpen && root.activeElement) btn.focus();
  }

  // ---------------------------------------------------------------------------------
  // Visitor and conversation

  /** Starts or resumes the visitor (once at a time); shows their newest conversation. */
  function visit() {
    return (visiting = visiting || (async () => {
      const body = {};
      if (token) body.token = token;
      // Who the user is; their name and e-mail go with each new conversation instead.
      if (user) body.user = user.hash ? { id: user.id, hash: user.hash } : { id: user.id };
      let v;
      try {
        v = await call('POST', '/visitors', { json: body });
      } catch (e) {
        if (e.status === 401 && user) {
          // A wrong identity hash: stay anonymous rather than show nothing.
          console.warn('parley widget: setUser: the identity hash was refused');
          user = null;
          visiting = null;
          return visit();
        }
        throw e;
      }
      if (v.token !== token || !conv || !v.conversation || v.conversation.session_id !== conv.session_id) {
        closeSocket();
        clearLog();
        conv = null;
      }
      token = v.token;
      store('localStorage', 'token', token);
      if (v.conversation && !conv) {
        showConversation(v.conversation);
        connect();
      }
      return v;
    })().finally(() => (visiting = null)));
  }

  /** A conversation to talk in: the visitor's current one, else a new one. */
  async function ensureConversation() {
    if (!token || !conv) await visit();
    if (!conv) await newConversation();
  }

  function newConversation() {
    return (creating = creating || (async () => {
      const focusIn = !!root.activeElement; // the notice's button goes away with the old log
      if (!token) await visit();
      typing(true);
      try {
        // The page's setUser name and e-mail go with the conversation (for the operators).
        const who = {};
        for (const k of ['name', 'email']) if (user && user[k]) who[k] = user[k];
        const c = await call('POST', '/conversations', { json: who });
        closeSocket();
        showConversation(c);
        ui.composer.hidden = false;
        connect();
        if (isOpen && (focusIn || root.activeElement)) ui.input.focus();
      } finally {
        typing(false);
      }
    })().finally(() => (creating = null)));
  }

  /** The chat cannot start (origin refused, server down): say so in the panel. */
  function failed(e) {
    typing(false);
    console.warn('parley widget:', (e && e.message) || e);
    if (e && e.code === 'session_closed') return ended();
    notice(e && e.code === 'origin_not_allowed' ? t('nosite') : t('down'));
    if (e && (e.code === 'origin_not_allowed' || e.code === 'widget_disabled')) {
      ui.composer.hidden = true;
      if (ui.speak) ui.speak.hidden = true;
    }
  }

  // ---------------------------------------------------------------------------------
  // The live socket: deltas and committed messages; reconnects with back-off and fills the
  // gap from the server (de-duplicated by message id), so nothing is lost or shown twice.

  function connect() {
    if (ws || !conv || conv.status !== 'active' || !token) return;
    clearTimeout(wsTimer);
    const sid = conv.session_id;
    const s = new WebSocket(`${HOST.replace(/^http/, 'ws')}/widget/v1/${encodeURIComponent(WID)}/conversations/${encodeURIComponent(sid)}/ws`, ['bearer', token]);
    ws = s;
    s.onopen = () => {
      wsTries = 0;
      setStatus('');
      sync(); // whatever was committed while we were not subscribed
    };
    s.onmessage = (ev) => {
      let f;
      try {
        f = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (ws !== s || (f.session_id && f.session_id !== sid)) return;
      if (f.type === 'delta') onDelta(f.text || '');
      else if (f.type === 'message') add(f, true);
      else if (f.type === 'close' || (f.type === 'timeout' && f.status && f.status !== 'active')) ended();
      else if (f.type === 'error' && f.error && f.error.code === 'lagged') {
        syncedId = 0; // events were dropped: take the whole conversation again
        sync();
      }
    };
    s.onclose = () => {
      if (ws !== s) return; // closed on purpose
      ws = null;
      if (!conv || conv.session_id !== sid || conv.status !== 'active') return;
      setStatus(t('offline'));
      // 0.5 s, 1 s, 2 s … up to 15 s, with jitter so many tabs do not return at once.
      const delay = Math.min(15000, 500 * 2 ** wsTries++) * (0.8 + Math.random() * 0.4);
      wsTimer = setTimeout(() => sync().then(connect), delay);
    };
  }

  function closeSocket() {
    clearTimeout(wsTimer);
    const s = ws;
    ws = null;
    if (s) s.close();
  }

  async function sync() {
    if (!conv) return;
    const sid = conv.session_id;
    try {
      const c = await call('GET', `/conversations/${encodeURIComponent(sid)}${syncedId ? `?after=${syncedId}` : ''}`);
      if (conv && conv.session_id === sid) merge(c, true);
    } catch (e) {
      if (e.status === 401 || e.status === 404) {
        // The token or conversation is gone (expired, deleted): start over.
        closeSocket();
        conv = null;
        token = null;
        store('localStorage', 'token', null);
        clearLog();
        if (isOpen) ensureConversation().catch(failed);
      }
    }
  }

  function wake() {
    if (!ws && conv && conv.status === 'active' && document.visibilityState !== 'hidden') {
      clearTimeout(wsTimer);
      wsTries = 0;
      sync().then(connect);
    }
  }
  window.addEventListener('online', wake);
  document.addEventListener('visibilitychange', wake);

  // ---------------------------------------------------------------------------------
  // Sending

  function submit() {
    const text = ui.input.value.trim();
    if ((!text && !draft.length) || ui.send.disabled) return;
    if (statusTimer) setStatus(''); // a refused file's note is old news now
    const files = draft;
    draft = [];
    previews();
    ui.input.value = '';
    autosize();
    canSend();
    send(text, files).catch(failed);
  }

  /** Sends a visitor message (files: [{file, preview}]), starting a conversation if needed. */
  async function send(text, files = []) {
    await ensureConversation();
    if (conv.status !== 'active') await newConversation();
    const r = row('HUMAN');
    r.classList.add('sending');
    fill(r, { text }, files);
    place(r, null);
    scrollDown(true);
    const item = { key: randomKey(), text, files, row: r, id: null };
    outbox.push(item);
    return post(item);
  }

  async function post(item) {
    const sid = conv.session_id;
    item.row.classList.remove('failed');
    item.row.classList.add('sending');
    item.row.querySelector('.meta .retry')?.remove();
    if (conv.mode !== 'OPERATOR') typing(true);
    let r;
    try {
      let opts;
      if (item.files.length) {
        const form = new FormData();
        form.append('message', item.text);
        for (const f of item.files) form.append('attachments', f.file, f.file.name);
        opts = { form };
      } else {
        opts = { json: { message: item.text } };
      }
      opts.key = item.key; // a retry with the same key is not run twice
      r = await call('POST', `/conversations/${encodeURIComponent(sid)}/messages`, opts);
    } catch (e) {
      typing(false);
      if (e.status === 429) {
        const secs = e.retry || 5;
        ui.composer.classList.add('waiting');
        canSend();
        for (let n = secs; n > 0; n--) {
          setStatus(t('wait', n));
          await sleep(1000);
        }
        setStatus('');
        ui.composer.classList.remove('waiting');
        canSend();
        return post(item);
      }
      if (e.code === 'session_closed') {
        item.row.remove();
        outbox.splice(outbox.indexOf(item), 1);
        return ended();
      }
      item.row.classList.remove('sending');
      item.row.classList.add('failed');
      const meta = item.row.querySelector('.meta');
      if (e.status === 413) {
        meta.append(el('span', { class: 'err' }, t('big', fmtSize((cfg.attachments || {}).max_bytes || 0))));
      } else if (e.status >= 400 && e.status < 500 && e.status !== 408) {
        meta.append(el('span', { class: 'err' }, t('failed'))); // refused as it is: a retry would be too
      } else {
        meta.append(el('span', { class: 'retry' }, el('span', { class: 'err' }, t('failed')), ' ',
          el('button', { type: 'button', class: 'link', onclick: () => post(item) }, t('retry'))));
      }
      return;
    }
    // Committed. The socket has usually shown both messages already; if not (it is
    // down), fetch them. The row stays in the outbox until then so it is not shown twice.
    if (item.id == null && r.human_message_id != null) item.id = r.human_message_id;
    if (conv && conv.session_id === sid) {
      conv.mode = r.mode || conv.mode;
      if ((item.id != null && !byId.has(item.id)) || (r.message_id != null && !byId.has(r.message_id))) await sync();
    }
    outbox.splice(outbox.indexOf(item), 1);
    item.row.classList.remove('sending');
    const shown = byId.get(item.id);
    // Already shown from the server under another text (a voice message's transcript).
    if (shown && shown !== item.row) item.row.remove();
    else if (item.id != null && !shown) {
      item.row.dataset.id = item.id;
      byId.set(item.id, item.row);
    }
    typing(false);
    if (conv && conv.session_id === sid && r.session_status === 'closed') ended();
  }

  function addFiles(files) {
    const max = (cfg.attachments || {}).max_bytes || Infinity;
    for (const file of files) {
      if (file.size > max) {
        setStatus(t('big', fmtSize(max)), true);
        continue;
      }
      const item = { file, preview: null };
      draft.push(item);
      if (/^image\//.test(file.type)) {
        // A data: URL, because a strict CSP allows data: images but not blob: ones.
        const reader = new FileReader();
        reader.onload = () => {
          item.preview = reader.result;
          previews();
        };
        reader.readAsDataURL(file);
      }
    }
    previews();
    canSend();
    ui.input.focus();
  }

  function previews() {
    const p = ui.previews;
    p.replaceChildren(...draft.map((d) => el('span', { class: 'chip' },
      d.preview ? el('img', { src: d.preview, alt: d.file.name }) : el('span', { class: 'name' }, d.file.name),
      el('button', { type: 'button', 'aria-label': `${t('remove')}: ${d.file.name}`, onclick: () => {
        draft = draft.filter((x) => x !== d);
        previews();
        canSend();
        ui.input.focus();
      } }, icon('close')))));
    p.hidden = !draft.length;
    canSend();
  }

  // ---------------------------------------------------------------------------------
  // Voice: record with MediaRecorder, send as an attachment (the server transcribes it);
  // read answers aloud with the browser's speech synthesis.

  async function toggleRecording() {
    if (recorder) return recorder.stop();
    let media;
    try {
      media = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch {
      return; // permission refused: nothing to record
    }
    const chunks = [];
    const rec = new MediaRecorder(media);
    rec.ondataavailable = (e) => e.data.size && chunks.push(e.data);
    rec.onstop = () => {
      media.getTracks().forEach((tr) => tr.stop());
      recorder = null;
      ui.mic.setAttribute('aria-pressed', 'false');
      ui.mic.setAttribute('aria-label', t('mic'));
      ui.mic.replaceChildren(icon('mic'));
      const type = rec.mimeType || 'audio/webm';
      const file = new File(chunks, `voice.${type.includes('ogg') ? 'ogg' : type.includes('mp4') ? 'm4a' : 'webm'}`, { type });
      if (file.size) send('', [{ file, preview: null }]).catch(failed);
    };
    recorder = rec;
    rec.start();
    ui.mic.setAttribute('aria-pressed', 'true');
    ui.mic.setAttribute('aria-label', t('stop'));
    ui.mic.replaceChildren(icon('stop'));
  }

  function toggleSpeak() {
    speakOn = !speakOn;
    store('localStorage', 'speak', speakOn ? '1' : null);
    ui.speak.setAttribute('aria-pressed', String(speakOn));
    if (!speakOn) speechSynthesis.cancel();
  }

  function speak(text) {
    if (!text.trim()) return;
    const u = new SpeechSynthesisUtterance(text);
    u.lang = locale;
    speechSynthesis.speak(u);
  }

  // ---------------------------------------------------------------------------------
  // Start, and the page API

  async function boot() {
    let error = null;
    const parsed = new Promise((r) => (document.readyState === 'loading' ? document.addEventListener('DOMContentLoaded', r) : r()));
    try {
      cfg = await call('GET', '/config');
    } catch (e) {
      error = e;
    }
    if (error && !embedded && (error.status === 404 || error.code === 'widget_disabled')) {
      console.warn(`parley widget: ${error.message}`);
      return; // no chat button for a widget that does not exist (any more)
    }
    await parsed; // the embedded target (and body) may come after our script tag
    build();
    if (error) {
      failed(error);
      setOpen(embedded || store('sessionStorage', 'open') === '1', false);
      return;
    }
    // A returning visitor (or an identified user) resumes now, so messages that arrive
    // while the panel is closed count as unread; new visitors start when they open it.
    if (token || user) await visit().catch(() => {});
    setOpen(embedded || store('sessionStorage', 'open') === '1', false);
  }

  const ready = boot().catch((e) => console.error('parley widget:', e));

  const instance = {
    get embedded() {
      return embedded;
    },
    open: () => ready.then(() => setOpen(true)),
    close: () => ready.then(() => setOpen(false)),
    toggle: () => ready.then(() => setOpen(!isOpen)),
    send: (text) => ready.then(() => cfg && String(text || '').trim() && send(String(text).trim())),
    setUser: (u) => {
      if (!u || !u.id) throw new TypeError('parley.setUser: {id, name?, email?, hash?}');
      user = { id: String(u.id) };
      for (const k of ['name', 'email', 'hash']) if (u[k] != null) user[k] = String(u[k]);
      return ready.then(() => cfg && (token || isOpen) && visit().then(() => isOpen && ensureConversation()).catch(failed));
    },
    reset: () => ready.then(() => {
      closeSocket();
      token = null;
      user = null;
      conv = null;
      store('localStorage', 'token', null);
      if (!ui) return null;
      clearLog();
      ui.composer.hidden = false;
      return cfg && isOpen ? ensureConversation().catch(failed) : null;
    }),
    on: (type, fn) => {
      if (!handlers[type] || typeof fn !== 'function') throw new TypeError(`parley.on: unknown event ${type}`);
      handlers[type].push(fn);
    },
  };

  // One `parley` object per page: calls go to the floating widget (else the first one);
  // setUser and reset reach every widget. Calls queued before loading
  // (window.parley = [['setUser', {...}]]) are replayed.
  let api = window.parley;
  if (!api || !api._widgets) {
    const queued = Array.isArray(api) ? api : [];
    const widgets = [];
    const pick = () => widgets.find((w) => !w.embedded) || widgets[0];
    api = {
      _widgets: widgets,
      open: () => pick().open(),
      close: () => pick().close(),
      toggle: () => pick().toggle(),
      send: (text) => pick().send(text),
      on: (type, fn) => { pick().on(type, fn); return api; },
      setUser: (u) => Promise.all(widgets.map((w) => w.setUser(u))),
      reset: () => Promise.all(widgets.map((w) => w.reset())),
    };
    window.parley = api;
    widgets.push(instance);
    for (const [method, ...args] of queued) if (api[method]) api[method](...args);
  } else {
    api._widgets.push(instance);
  }
  document.dispatchEvent(new CustomEvent('parley:ready'));
})();
