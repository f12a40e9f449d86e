use super::chats::*;
use super::test_support::*;
use super::{Reader, WorkspaceError};
use crate::tenancy::Tenant;

fn new_chat(title: &str, kind: &str, others: &[i64]) -> NewChat {
    NewChat {
        title: title.into(),
        kind: kind.into(),
        participant_ids: others.to_vec(),
    }
}

fn creator(user_id: i64) -> Reader {
    reader(user_id, &["chats_create"])
}

/// Chat A: users 1 (creator, chats_create) and 2. Chat B: users 3 and 4.
fn two_chats(t: &Tenant) -> (i64, i64) {
    let a = create_chat(t, &creator(1), &new_chat("A", "group", &[2]), &is_member).unwrap();
    let b = create_chat(t, &creator(3), &new_chat("B", "group", &[4]), &is_member).unwrap();
    (a.chat.id, b.chat.id)
}

/// Name, reader, chats listed, then the outcomes of: get A, get B, post in
/// A, rename A.
type Case = (
    &'static str,
    Reader,
    Vec<i64>,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

#[test]
fn visibility_posting_and_management_by_reader() {
    let t = tenant();
    let t = &t.tenant;
    let (a, b) = two_chats(t);
    let ok = "ok";
    let not_found = "not found";
    let managers_only = "forbidden: chats_create";
    let participants_only = "forbidden: chat participants only";
    // reader, chats listed, get A, get B, post in A, rename A
    let cases: Vec<Case> = vec![
        ("creator", creator(1), vec![a], ok, not_found, ok, ok),
        (
            "plain participant",
            reader(2, &[]),
            vec![a],
            ok,
            not_found,
            ok,
            managers_only,
        ),
        (
            "outsider",
            reader(5, &[]),
            vec![],
            not_found,
            not_found,
            not_found,
            not_found,
        ),
        (
            "outsider who creates chats",
            creator(5),
            vec![],
            not_found,
            not_found,
            not_found,
            not_found,
        ),
        (
            "view all",
            reader(6, &["chats_view_all"]),
            vec![a, b],
            ok,
            ok,
            participants_only,
            managers_only,
        ),
        (
            "view all + create, not taking part",
            reader(6, &["chats_view_all", "chats_create"]),
            vec![a, b],
            ok,
            ok,
            participants_only,
            managers_only,
        ),
        ("admin", admin(7), vec![a, b], ok, ok, participants_only, ok),
    ];
    let outcome = |r: Result<(), WorkspaceError>| match r {
        Ok(()) => "ok".to_string(),
        Err(WorkspaceError::NotFound) => "not found".to_string(),
        Err(WorkspaceError::Forbidden(what)) => format!("forbidden: {what}"),
        Err(e) => panic!("{e}"),
    };
    for (name, r, listed, get_a, get_b, post_a, rename_a) in cases {
        let mut ids: Vec<i64> = list_chats(t, &r)
            .unwrap()
            .iter()
            .map(|c| c.chat.id)
            .collect();
        ids.sort();
        assert_eq!(ids, listed, "{name}: list");
        assert_eq!(
            outcome(get_chat(t, &r, a).map(drop)),
            get_a,
            "{name}: get A"
        );
        assert_eq!(
            outcome(get_chat(t, &r, b).map(drop)),
            get_b,
            "{name}: get B"
        );
        assert_eq!(
            outcome(participants(t, &r, a).map(drop)),
            get_a,
            "{name}: participants of A"
        );
        assert_eq!(
            outcome(list_messages(t, &r, a, None, None).map(drop)),
            get_a,
            "{name}: messages of A"
        );
        assert_eq!(
            outcome(post_message(t, &r, a, name).map(drop)),
            post_a,
            "{name}: post in A"
        );
        let rename = ChatUpdate {
            title: Some(format!("A by {name}")),
            archived: None,
        };
        assert_eq!(
            outcome(update_chat(t, &r, a, &rename).map(drop)),
            rename_a,
            "{name}: rename A"
        );
        assert!(is_not_found(&get_chat(t, &r, 999)), "{name}: missing chat");
    }
}

#[test]
fn admin_can_join_and_then_post() {
    let t = tenant();
    let t = &t.tenant;
    let (a, _) = two_chats(t);
    let root = admin(7);
    add_participant(t, &root, a, 7, &is_member).unwrap();
    post_message(t, &root, a, "hello from the admin").unwrap();
    let summary = get_chat(t, &root, a).unwrap();
    assert!(summary.participant);
    assert_eq!(summary.participant_count, 3);
}

#[test]
fn creating_chats() {
    let t = tenant();
    let t = &t.tenant;
    assert_eq!(
        forbidden(create_chat(
            t,
            &reader(1, &["chats_view_all"]),
            &new_chat("x", "group", &[]),
            &is_member
        )),
        "chats_create"
    );
    // Every bad field at once.
    assert_eq!(
        fields(create_chat(
            t,
            &creator(1),
            &new_chat("  ", "channel", &[2, 42]),
            &is_member
        )),
        ["kind", "participant_ids", "title"]
    );
    assert_eq!(
        fields(create_chat(
            t,
            &creator(1),
            &new_chat(&"x".repeat(201), "group", &[]),
            &is_member
        )),
        ["title"]
    );
    let errors = validation(create_chat(
        t,
        &creator(1),
        &new_chat("dm", "direct", &[2, 3]),
        &is_member,
    ));
    assert_eq!(
        errors["participant_ids"],
        "a direct chat has exactly one other participant"
    );
    assert!(create_chat(t, &creator(1), &new_chat("dm", "direct", &[1]), &is_member).is_err());

    // The creator is added once, whether listed or not; duplicates collapse.
    let chat = create_chat(
        t,
        &creator(1),
        &new_chat(&"é".repeat(200), "group", &[1, 2, 2, 3]),
        &is_member,
    )
    .unwrap();
    assert_eq!(chat.chat.title.chars().count(), 200);
    assert_eq!(chat.chat.kind, ChatKind::Group);
    assert_eq!(chat.chat.created_by, 1);
    let users: Vec<i64> = participants(t, &creator(1), chat.chat.id)
        .unwrap()
        .iter()
        .map(|p| p.user_id)
        .collect();
    assert_eq!(users, [1, 2, 3]);

    let dm = create_chat(t, &creator(1), &new_chat("dm", "direct", &[2]), &is_member).unwrap();
    assert_eq!(dm.participant_count, 2);
    // A direct chat takes no one else.
    let errors = validation(add_participant(t, &creator(1), dm.chat.id, 3, &is_member));
    assert!(errors.contains_key("chat_id"), "{errors:?}");
}

#[test]
fn participants_are_members_and_may_leave() {
    let t = tenant();
    let t = &t.tenant;
    let (a, _) = two_chats(t);
    // Non-members are refused, only to someone who manages the chat.
    assert_eq!(
        fields(add_participant(t, &creator(1), a, 42, &is_member)),
        ["user_id"]
    );
    assert_eq!(
        forbidden(add_participant(t, &reader(2, &[]), a, 42, &is_member)),
        "chats_create"
    );
    assert!(is_not_found(&add_participant(
        t,
        &creator(5),
        a,
        3,
        &is_member
    )));

    add_participant(t, &creator(1), a, 3, &is_member).unwrap();
    // Again: no change, no error.
    let again = add_participant(t, &creator(1), a, 3, &is_member).unwrap();
    assert_eq!(again.user_id, 3);

    // A plain participant cannot remove others, but can leave.
    assert_eq!(
        forbidden(remove_participant(t, &reader(2, &[]), a, 3)),
        "chats_create"
    );
    remove_participant(t, &reader(2, &[]), a, 2).unwrap();
    assert!(is_not_found(&get_chat(t, &reader(2, &[]), a)));
    // The creator removes others; someone not taking part is NotFound.
    remove_participant(t, &creator(1), a, 3).unwrap();
    assert!(is_not_found(&remove_participant(t, &creator(1), a, 3)));
    assert!(is_not_found(&post_message(
        t,
        &reader(3, &[]),
        a,
        "still here?"
    )));
}

#[test]
fn message_bodies_are_checked_in_characters() {
    let t = tenant();
    let t = &t.tenant;
    let (a, _) = two_chats(t);
    let me = creator(1);
    for bad in [
        "",
        "   \n",
        &"x".repeat(10_001),
        &"é".repeat(10_001),
        "\0",
        "\0leading NUL",
        "inner\0NUL",
    ] {
        assert_eq!(
            fields(post_message(t, &me, a, bad)),
            ["body"],
            "{}",
            bad.len()
        );
    }
    for good in [
        "x",
        &"x".repeat(10_000),
        &"é".repeat(10_000),
        &"👍".repeat(10_000),
    ] {
        let m = post_message(t, &me, a, good).unwrap();
        assert_eq!(m.body, good);
    }
    let m = post_message(t, &me, a, "first").unwrap();
    assert_eq!(fields(edit_message(t, &me, a, m.id, "")), ["body"]);
    assert_eq!(
        fields(edit_message(t, &me, a, m.id, &"x".repeat(10_001))),
        ["body"]
    );
}

#[test]
fn only_authors_edit_and_delete() {
    let t = tenant();
    let t = &t.tenant;
    let (a, _) = two_chats(t);
    let author = creator(1);
    let other = reader(2, &[]);
    let m = post_message(t, &author, a, "original").unwrap();

    assert_eq!(
        forbidden(edit_message(t, &other, a, m.id, "hijacked")),
        OWN_MESSAGES_ONLY
    );
    assert_eq!(
        forbidden(delete_message(t, &other, a, m.id)),
        OWN_MESSAGES_ONLY
    );
    // Even the admin and a chat overseer may not rewrite someone's words.
    assert_eq!(
        forbidden(edit_message(t, &admin(7), a, m.id, "x")),
        OWN_MESSAGES_ONLY
    );
    assert_eq!(
        forbidden(delete_message(t, &reader(6, &["chats_view_all"]), a, m.id)),
        OWN_MESSAGES_ONLY
    );
    // Someone who does not see the chat learns nothing.
    assert!(is_not_found(&edit_message(
        t,
        &reader(5, &[]),
        a,
        m.id,
        "x"
    )));
    // A message id of another chat is not in this one.
    let b = create_chat(t, &creator(1), &new_chat("B", "group", &[]), &is_member).unwrap();
    assert!(is_not_found(&edit_message(
        t, &author, b.chat.id, m.id, "x"
    )));

    let edited = edit_message(t, &author, a, m.id, "better").unwrap();
    assert_eq!(edited.body, "better");
    assert!(edited.edited_at.is_some());
    delete_message(t, &author, a, m.id).unwrap();
    let page = list_messages(t, &other, a, None, None).unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].body, "", "a deleted body is blanked");
    assert!(page.items[0].deleted_at.is_some());
    // Gone for further edits and deletes.
    assert!(is_not_found(&edit_message(t, &author, a, m.id, "back")));
    assert!(is_not_found(&delete_message(t, &author, a, m.id)));
    // The text is still in the file, but only the blank leaves it.
    assert!(get_chat(t, &author, a).unwrap().last_message.is_none());
}

#[test]
fn archived_chats_are_read_only_for_messages() {
    let t = tenant();
    let t = &t.tenant;
    let (a, _) = two_chats(t);
    let me = creator(1);
    let m = post_message(t, &me, a, "before").unwrap();
    let archive = ChatUpdate {
        title: None,
        archived: Some(true),
    };
    let archived = update_chat(t, &me, a, &archive).unwrap();
    assert!(archived.chat.archived_at.is_some());
    // Every problem at once.
    assert_eq!(fields(post_message(t, &me, a, "")), ["body", "chat_id"]);
    assert_eq!(fields(edit_message(t, &me, a, m.id, "x")), ["chat_id"]);
    assert_eq!(fields(delete_message(t, &me, a, m.id)), ["chat_id"]);
    // Renaming with an empty title is reported like any field.
    let bad = ChatUpdate {
        title: Some(String::new()),
        archived: Some(false),
    };
    assert_eq!(fields(update_chat(t, &me, a, &bad)), ["title"]);
    let unarchive = ChatUpdate {
        title: Some("A again".into()),
        archived: Some(false),
    };
    let back = update_chat(t, &me, a, &unarchive).unwrap();
    assert_eq!(back.chat.archived_at, None);
    assert_eq!(back.chat.title, "A again");
    post_message(t, &me, a, "after").unwrap();
}

#[test]
fn unread_counts_and_monotonic_read_marks() {
    let t = tenant();
    let t = &t.tenant;
    let (a, _) = two_chats(t);
    let one = creator(1);
    let two = reader(2, &[]);
    let m1 = post_message(t, &one, a, "1").unwrap();
    let m2 = post_message(t, &one, a, "2").unwrap();
    let m3 = post_message(t, &one, a, "3").unwrap();
    let mine = post_message(t, &two, a, "mine").unwrap();

    let unread = |r: &Reader| get_chat(t, r, a).unwrap().unread_count;
    assert_eq!(unread(&two), 3, "own messages do not count");
    assert_eq!(unread(&one), 1);
    assert_eq!(mark_read(t, &two, a, m2.id).unwrap(), m2.id);
    assert_eq!(unread(&two), 1);
    // Never backwards.
    assert_eq!(mark_read(t, &two, a, m1.id).unwrap(), m2.id);
    assert_eq!(unread(&two), 1);
    // Deleted messages are not unread.
    delete_message(t, &one, a, m3.id).unwrap();
    assert_eq!(unread(&two), 0);

    let listed = list_chats(t, &two).unwrap();
    assert_eq!(listed[0].last_message.as_ref().map(|m| m.id), Some(mine.id));
    assert_eq!(listed[0].unread_count, 0);
    // Overseers are not participants: nothing is unread for them, and they
    // have no read mark to move.
    let overseer = reader(6, &["chats_view_all"]);
    assert_eq!(unread(&overseer), 0);
    assert_eq!(
        forbidden(mark_read(t, &overseer, a, m1.id)),
        PARTICIPANTS_ONLY
    );
    // A message of another chat, or none at all.
    assert!(is_not_found(&mark_read(t, &two, a, 999)));
    assert!(is_not_found(&mark_read(t, &reader(5, &[]), a, m1.id)));
}

#[test]
fn chats_are_listed_by_last_activity() {
    let t = tenant();
    let t = &t.tenant;
    let me = creator(1);
    let a = create_chat(t, &me, &new_chat("A", "group", &[]), &is_member).unwrap();
    let b = create_chat(t, &me, &new_chat("B", "group", &[]), &is_member).unwrap();
    let order = || -> Vec<i64> {
        list_chats(t, &me)
            .unwrap()
            .iter()
            .map(|c| c.chat.id)
            .collect()
    };
    assert_eq!(order(), [b.chat.id, a.chat.id]);
    std::thread::sleep(std::time::Duration::from_millis(3));
    post_message(t, &me, a.chat.id, "bump").unwrap();
    assert_eq!(order(), [a.chat.id, b.chat.id]);
}

#[test]
fn messages_page_newest_first() {
    let t = tenant();
    let t = &t.tenant;
    let (a, _) = two_chats(t);
    let me = creator(1);
    let posted: Vec<i64> = (0..25)
        .map(|i| post_message(t, &me, a, &format!("m{i}")).unwrap().id)
        .collect();
    let mut seen = Vec::new();
    let mut before = None;
    let mut sizes = Vec::new();
    loop {
        let page = list_messages(t, &me, a, before, Some(10)).unwrap();
        sizes.push(page.items.len());
        seen.extend(page.items.iter().map(|m| m.id));
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(sizes, [10, 10, 5]);
    let mut newest_first = posted.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);
    assert_eq!(fields(list_messages(t, &me, a, None, Some(0))), ["limit"]);
    assert_eq!(fields(list_messages(t, &me, a, None, Some(101))), ["limit"]);
    assert_eq!(
        list_messages(t, &me, a, None, Some(100))
            .unwrap()
            .items
            .len(),
        25
    );
}

fn bridge(name: &str) -> ExternalAuthor {
    ExternalAuthor {
        name: name.into(),
        external_id: Some("tg:42".into()),
    }
}

#[test]
fn an_external_message_is_posted_once_per_delivery_and_belongs_to_nobody() {
    let t = tenant();
    let t = &t.tenant;
    let (a, _) = two_chats(t);
    let posted = post_external_message(t, a, "hello from outside", &bridge(" Eve "), "messages:m1")
        .unwrap()
        .expect("posted");
    assert_eq!(posted.user_id, EXTERNAL_USER_ID);
    assert_eq!(posted.external_author, Some(bridge("Eve")));
    // The same delivery again (a job run twice) posts nothing more.
    let again = post_external_message(t, a, "hello from outside", &bridge("Eve"), "messages:m1");
    assert_eq!(again.unwrap(), None);
    let page = list_messages(t, &reader(2, &[]), a, None, None).unwrap();
    assert_eq!(page.items, vec![posted.clone()]);
    let json = serde_json::to_value(&page.items[0]).unwrap();
    assert_eq!(json["external_author"]["name"], "Eve");
    // Counted as unread by the participants, and nobody's own to edit or delete.
    let chats = list_chats(t, &reader(2, &[])).unwrap();
    assert_eq!(chats[0].unread_count, 1);
    assert_eq!(
        forbidden(edit_message(t, &admin(1), a, posted.id, "x")),
        OWN_MESSAGES_ONLY
    );
    // Users' messages say nothing of an external author.
    let own = post_message(t, &reader(2, &[]), a, "hi").unwrap();
    let json = serde_json::to_value(&own).unwrap();
    assert!(json.get("external_author").is_none(), "{json}");
}

#[test]
fn an_external_message_needs_a_live_chat_and_valid_fields() {
    let t = tenant();
    let t = &t.tenant;
    let (a, _) = two_chats(t);
    let missing = post_external_message(t, 999, "x", &bridge("Eve"), "messages:m2");
    assert!(is_not_found(&missing), "{missing:?}");
    let bad = ExternalAuthor {
        name: "  ".into(),
        external_id: Some(String::new()),
    };
    assert_eq!(
        fields(post_external_message(t, a, "", &bad, "messages:m3")),
        ["author.external_id", "author.name", "body"]
    );
    update_chat(
        t,
        &creator(1),
        a,
        &ChatUpdate {
            title: None,
            archived: Some(true),
        },
    )
    .unwrap();
    assert_eq!(
        fields(post_external_message(
            t,
            a,
            "x",
            &bridge("Eve"),
            "messages:m4"
        )),
        ["chat_id"]
    );
}
