//! `push`, `login`, `logout`: the verbs that talk to registries (through berthd's registry
//! service; the CLI itself never makes an HTTP request).

use crate::client::{Context, Error};
use crate::images::ProgressView;
use berth_api::images::v1 as api;
use berth_api::registry::v1 as reg;
use clap::Args;
use std::io::{BufRead, IsTerminal, Write};
use tokio_stream::StreamExt;

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The image to push, named for its registry: registry:5000/app:1.0
    pub reference: String,
    /// Print nothing but errors
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The registry (host[:port]); Docker Hub when absent
    pub registry: Option<String>,
    #[arg(short, long)]
    pub username: Option<String>,
    /// The password (prefer --password-stdin: a password on the command line shows in `ps`)
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from stdin
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry (host[:port]); Docker Hub when absent
    pub registry: Option<String>,
}

pub async fn push(ctx: &Context, a: PushArgs) -> Result<(), Error> {
    let mut stream = ctx
        .images()
        .push(ctx.req(api::PushRequest {
            reference: a.reference.clone(),
            source: String::new(),
            // The login `berth login` stored is used.
            auth: None,
        }))
        .await?
        .into_inner();
    let mut view = ProgressView::new(a.quiet);
    let mut pushed = None;
    let r = loop {
        match stream.next().await {
            None => break Ok(()),
            Some(Err(e)) => break Err(Error::from(e)),
            Some(Ok(m)) => match m.item {
                Some(api::push_response::Item::Progress(p)) => view.update(&p),
                Some(api::push_response::Item::Pushed(d)) => pushed = Some(d),
                None => {}
            },
        }
    };
    view.finish();
    r?;
    let d = pushed.ok_or_else(|| {
        Error::Local(format!(
            "the push of {} ended without a manifest",
            a.reference
        ))
    })?;
    if !a.quiet {
        let tag = berth_core::Reference::parse(&a.reference)
            .ok()
            .and_then(|r| r.tag().map(str::to_string))
            .unwrap_or_else(|| "latest".into());
        println!("{}", berth_docker::push_summary(&tag, &d.digest, d.size));
    }
    Ok(())
}

fn registry_name(r: Option<String>) -> String {
    r.unwrap_or_else(|| "docker.io".to_string())
}

/// Reads a line from the terminal with echo off (for a password).
fn read_hidden(prompt: &str) -> std::io::Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).map_err(std::io::Error::from)?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).map_err(std::io::Error::from)?;
    let mut line = String::new();
    let r = stdin.lock().read_line(&mut line);
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    eprintln!();
    r?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

pub async fn login(ctx: &Context, a: LoginArgs) -> Result<(), Error> {
    let registry = registry_name(a.registry);
    let tty = std::io::stdin().is_terminal();
    let username = match a.username {
        Some(u) => u,
        None if tty && !a.password_stdin => {
            eprint!("Username: ");
            let _ = std::io::stderr().flush();
            let mut u = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut u)
                .map_err(|e| Error::Local(format!("reading the user name: {e}")))?;
            u.trim().to_string()
        }
        None => {
            return Err(Error::Local(
                "a user name is needed: berth login -u NAME [--password-stdin] REGISTRY".into(),
            ))
        }
    };
    let password = if a.password_stdin {
        if a.password.is_some() {
            return Err(Error::Local(
                "--password and --password-stdin are mutually exclusive".into(),
            ));
        }
        let mut p = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut p)
            .map_err(|e| Error::Local(format!("reading the password from stdin: {e}")))?;
        p.trim_end_matches(['\r', '\n']).to_string()
    } else if let Some(p) = a.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p
    } else if tty {
        read_hidden("Password: ").map_err(|e| Error::Local(format!("reading the password: {e}")))?
    } else {
        return Err(Error::Local(
            "a password is needed: use --password-stdin or -p".into(),
        ));
    };
    if username.is_empty() || password.is_empty() {
        return Err(Error::Local(
            "user name and password must not be empty".into(),
        ));
    }
    let r = ctx
        .registry()
        .login(ctx.req(reg::LoginRequest {
            registry,
            username,
            password,
        }))
        .await?
        .into_inner();
    if !r.message.is_empty() {
        eprintln!("{}", r.message);
    }
    println!("Login Succeeded");
    Ok(())
}

pub async fn logout(ctx: &Context, a: LogoutArgs) -> Result<(), Error> {
    let registry = registry_name(a.registry);
    let r = ctx
        .registry()
        .logout(ctx.req(reg::LogoutRequest {
            registry: registry.clone(),
        }))
        .await?
        .into_inner();
    if r.removed {
        println!("Removing login credentials for {registry}");
    } else {
        println!("Not logged in to {registry}");
    }
    Ok(())
}
