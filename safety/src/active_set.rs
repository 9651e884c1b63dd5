//! A dense dual active-set QP solver (Goldfarb–Idnani) for the small problems of the safety
//! filter: minimise ½ (x − r)ᵀ W (x − r) with W diagonal positive, subject to a box
//! lo ≤ x ≤ hi and rows aₖ·x ≥ bₖ.
//!
//! The method starts from the unconstrained minimum x = r (which is dual feasible), adds the
//! most violated constraint at each step and drops constraints whose multiplier would turn
//! negative, keeping `J` (with J Jᵀ = W⁻¹ projected on the free directions) and the upper
//! triangular `R` of the active normals up to date with Givens rotations. For n ≤ 10 variables
//! and a few active constraints a solve is a few microseconds. Every buffer is sized once by
//! [`ActiveSet::new`]; a solve allocates nothing.
//!
//! Constraint numbering: `0..n` are the lower bounds, `n..2n` the upper bounds, then the rows.

use crate::qp::QpError;

/// One problem, borrowed from the caller's buffers.
#[derive(Debug, Clone, Copy)]
pub struct Problem<'a> {
    /// Diagonal of W (all > 0).
    pub weights: &'a [f64],
    /// The reference r (the unconstrained minimum).
    pub reference: &'a [f64],
    pub lo: &'a [f64],
    pub hi: &'a [f64],
    /// Row-major, `b.len()` rows of `n` entries.
    pub rows: &'a [f64],
    pub b: &'a [f64],
}

impl Problem<'_> {
    fn n(&self) -> usize {
        self.weights.len()
    }

    fn m(&self) -> usize {
        2 * self.n() + self.b.len()
    }

    /// Value of constraint `k` at `x` (≥ 0 when it holds).
    fn slack(&self, k: usize, x: &[f64]) -> f64 {
        let n = self.n();
        if k < n {
            x[k] - self.lo[k]
        } else if k < 2 * n {
            self.hi[k - n] - x[k - n]
        } else {
            let i = k - 2 * n;
            let a = &self.rows[i * n..(i + 1) * n];
            a.iter().zip(x).map(|(a, x)| a * x).sum::<f64>() - self.b[i]
        }
    }

    /// Feasibility tolerance of constraint `k`.
    fn tol(&self, k: usize) -> f64 {
        let n = self.n();
        let c = if k < n {
            self.lo[k]
        } else if k < 2 * n {
            self.hi[k - n]
        } else {
            self.b[k - 2 * n]
        };
        1e-11 * (1.0 + c.abs())
    }

    /// Normal of constraint `k` written to `out`.
    fn normal(&self, k: usize, out: &mut [f64]) {
        let n = self.n();
        out.fill(0.0);
        if k < n {
            out[k] = 1.0;
        } else if k < 2 * n {
            out[k - n] = -1.0;
        } else {
            let i = k - 2 * n;
            out.copy_from_slice(&self.rows[i * n..(i + 1) * n]);
        }
    }
}

/// What a solve did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Steps taken (constraint additions and drops).
    pub iterations: usize,
    /// Active constraints at the solution.
    pub active: usize,
}

/// Solver workspace for problems of up to `n_max` variables and `m_max` constraints (box
/// included).
#[derive(Debug, Clone)]
pub struct ActiveSet {
    n_max: usize,
    m_max: usize,
    /// n×n, column-major.
    j: Vec<f64>,
    /// n×n upper triangular, column-major (column c holds the active constraint c).
    r: Vec<f64>,
    d: Vec<f64>,
    z: Vec<f64>,
    step_dual: Vec<f64>,
    np: Vec<f64>,
    /// Multipliers of the active set, then of the constraint being added.
    u: Vec<f64>,
    /// Active constraint indices.
    active: Vec<usize>,
    is_active: Vec<bool>,
    s: Vec<f64>,
}

fn hypot(a: f64, b: f64) -> f64 {
    a.hypot(b)
}

impl ActiveSet {
    pub fn new(n_max: usize, m_max: usize) -> Self {
        Self {
            n_max,
            m_max,
            j: vec![0.0; n_max * n_max],
            r: vec![0.0; n_max * n_max],
            d: vec![0.0; n_max],
            z: vec![0.0; n_max],
            step_dual: vec![0.0; n_max],
            np: vec![0.0; n_max],
            u: vec![0.0; n_max + 1],
            active: Vec::with_capacity(n_max + 1),
            is_active: vec![false; m_max],
            s: vec![0.0; m_max],
        }
    }

    /// The active constraints at the last solution and their multipliers (≥ 0).
    pub fn active(&self) -> impl Iterator<Item = (usize, f64)> + '_ {
        self.active.iter().copied().zip(self.u.iter().copied())
    }

    /// Solves `p`, writing the minimiser to `x`. Errors: [`QpError::Infeasible`] when no point
    /// satisfies every constraint; [`QpError::Solver`] on bad sizes, a numerically degenerate
    /// active set or too many steps (the caller can fall back to clarabel).
    pub fn solve(&mut self, p: &Problem, x: &mut [f64]) -> Result<Stats, QpError> {
        let n = p.n();
        let m = p.m();
        let sizes_ok = n <= self.n_max
            && m <= self.m_max
            && p.reference.len() == n
            && p.lo.len() == n
            && p.hi.len() == n
            && x.len() == n
            && p.rows.len() == n * p.b.len();
        if !sizes_ok {
            return Err(QpError::Solver(format!(
                "active set: problem with {n} variables and {m} constraints does not fit \
                 {} × {} (or its slices disagree)",
                self.n_max, self.m_max
            )));
        }
        if p.weights.iter().any(|w| !(*w > 0.0 && w.is_finite())) {
            return Err(QpError::Solver(
                "active set: weights must be finite and > 0".into(),
            ));
        }
        // J = W^{-1/2} (so J Jᵀ = W⁻¹), R empty, x = r.
        self.j[..n * n].fill(0.0);
        self.r[..n * n].fill(0.0);
        for (i, w) in p.weights.iter().enumerate() {
            self.j[i * n + i] = 1.0 / w.sqrt();
        }
        x.copy_from_slice(p.reference);
        self.active.clear();
        self.is_active[..m].fill(false);
        let mut r_norm = 1.0f64;
        let max_steps = 4 * m + 20;
        let mut steps = 0usize;
        'add: loop {
            // Step 1: the most violated constraint not in the active set.
            let mut worst = 0.0;
            let mut ip = usize::MAX;
            for k in 0..m {
                if self.is_active[k] {
                    continue;
                }
                let s = p.slack(k, x);
                self.s[k] = s;
                if s < -p.tol(k) && s < worst {
                    worst = s;
                    ip = k;
                }
            }
            if ip == usize::MAX {
                return Ok(Stats {
                    iterations: steps,
                    active: self.active.len(),
                });
            }
            p.normal(ip, &mut self.np[..n]);
            let iq0 = self.active.len();
            self.u[iq0] = 0.0;
            // Step 2: move towards satisfying `ip`, dropping constraints as needed.
            loop {
                steps += 1;
                if steps > max_steps {
                    return Err(QpError::Solver(format!(
                        "active set: no convergence in {max_steps} steps"
                    )));
                }
                let iq = self.active.len();
                // d = Jᵀ n⁺, z = J₂ d₂ (primal direction), r = R⁻¹ d₁ (minus the dual one).
                for c in 0..n {
                    let col = &self.j[c * n..(c + 1) * n];
                    self.d[c] = col.iter().zip(&self.np[..n]).map(|(a, b)| a * b).sum();
                }
                self.z[..n].fill(0.0);
                for c in iq..n {
                    let dc = self.d[c];
                    for (zk, jk) in self.z[..n].iter_mut().zip(&self.j[c * n..(c + 1) * n]) {
                        *zk += jk * dc;
                    }
                }
                for i in (0..iq).rev() {
                    let mut v = self.d[i];
                    for c in i + 1..iq {
                        v -= self.r[c * n + i] * self.step_dual[c];
                    }
                    self.step_dual[i] = v / self.r[i * n + i];
                }
                // Partial step: largest dual step keeping the multipliers ≥ 0.
                let (mut t1, mut drop) = (f64::INFINITY, usize::MAX);
                for i in 0..iq {
                    if self.step_dual[i] > 0.0 {
                        let t = self.u[i] / self.step_dual[i];
                        if t < t1 {
                            t1 = t;
                            drop = i;
                        }
                    }
                }
                // Full step: the primal step that satisfies `ip`.
                let zz: f64 = self.z[..n].iter().map(|v| v * v).sum();
                let zn: f64 = self.z[..n]
                    .iter()
                    .zip(&self.np[..n])
                    .map(|(a, b)| a * b)
                    .sum();
                let t2 = if zz > f64::EPSILON * f64::EPSILON && zn > 0.0 {
                    -self.s[ip] / zn
                } else {
                    f64::INFINITY
                };
                let t = t1.min(t2);
                if !t.is_finite() {
                    return Err(QpError::Infeasible);
                }
                for i in 0..iq {
                    self.u[i] -= t * self.step_dual[i];
                }
                self.u[iq] += t;
                if t2.is_finite() {
                    for (xk, zk) in x.iter_mut().zip(&self.z[..n]) {
                        *xk += t * zk;
                    }
                }
                if t2 <= t1 {
                    // Full step: `ip` joins the active set.
                    if !self.add_constraint(n, &mut r_norm) {
                        return Err(QpError::Solver(
                            "active set: degenerate constraint normals".into(),
                        ));
                    }
                    self.active.push(ip);
                    self.is_active[ip] = true;
                    continue 'add;
                }
                // Partial step: constraint `drop` leaves the active set; try `ip` again.
                let leaving = self.active[drop];
                self.is_active[leaving] = false;
                self.delete_constraint(n, drop);
                self.s[ip] = p.slack(ip, x);
            }
        }
    }

    /// Adds the constraint whose `d = Jᵀ n⁺` is in `self.d`: rotates d₂ onto its first
    /// entry (applying the rotations to J's columns) and appends d₁ as a new column of R.
    fn add_constraint(&mut self, n: usize, r_norm: &mut f64) -> bool {
        let iq = self.active.len();
        for c in (iq + 1..n).rev() {
            let (a, b) = (self.d[c - 1], self.d[c]);
            let h = hypot(a, b);
            if h == 0.0 {
                continue;
            }
            self.d[c] = 0.0;
            let (mut cs, mut sn) = (a / h, b / h);
            if cs < 0.0 {
                cs = -cs;
                sn = -sn;
                self.d[c - 1] = -h;
            } else {
                self.d[c - 1] = h;
            }
            for k in 0..n {
                let t1 = self.j[(c - 1) * n + k];
                let t2 = self.j[c * n + k];
                self.j[(c - 1) * n + k] = cs * t1 + sn * t2;
                self.j[c * n + k] = sn * t1 - cs * t2;
            }
        }
        for i in 0..=iq {
            self.r[iq * n + i] = self.d[i];
        }
        let diag = self.d[iq].abs();
        if diag <= f64::EPSILON * *r_norm {
            return false;
        }
        *r_norm = r_norm.max(diag);
        true
    }

    /// Removes active constraint number `qq` (its position in the active set), moving the
    /// multiplier of the constraint being added along, and restores R to triangular form.
    fn delete_constraint(&mut self, n: usize, qq: usize) {
        let iq = self.active.len();
        self.active.remove(qq);
        for i in qq..iq {
            self.u[i] = self.u[i + 1];
        }
        self.u[iq] = 0.0;
        for c in qq..iq - 1 {
            for i in 0..n {
                self.r[c * n + i] = self.r[(c + 1) * n + i];
            }
        }
        for i in 0..n {
            self.r[(iq - 1) * n + i] = 0.0;
        }
        let iq = iq - 1;
        for c in qq..iq {
            let (a, b) = (self.r[c * n + c], self.r[c * n + c + 1]);
            let h = hypot(a, b);
            if h == 0.0 {
                continue;
            }
            let (mut cs, mut sn) = (a / h, b / h);
            self.r[c * n + c + 1] = 0.0;
            if cs < 0.0 {
                cs = -cs;
                sn = -sn;
                self.r[c * n + c] = -h;
            } else {
                self.r[c * n + c] = h;
            }
            for k in c + 1..iq {
                let t1 = self.r[k * n + c];
                let t2 = self.r[k * n + c + 1];
                self.r[k * n + c] = cs * t1 + sn * t2;
                self.r[k * n + c + 1] = sn * t1 - cs * t2;
            }
            for k in 0..n {
                let t1 = self.j[c * n + k];
                let t2 = self.j[(c + 1) * n + k];
                self.j[c * n + k] = cs * t1 + sn * t2;
                self.j[(c + 1) * n + k] = sn * t1 - cs * t2;
            }
        }
    }
}
